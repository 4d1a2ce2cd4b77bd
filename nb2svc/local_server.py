"""The registry server ``nb2svc.deploy`` answers from: the one at the configured address, or one started there.

The address is ``server=``, else ``NB2SVC_SERVER``, else 127.0.0.1:8765. A server that answers there must serve
the same registry; if none answers, one is started on 127.0.0.1 in the background (``nb2svc serve --registry``,
its output in ``<registry>/.server-<port>.log``). It lives as long as the process that started it (the
notebook's kernel, or the script): when that process ends, the server stops too.

``deploy`` then waits until the server has loaded the new version and replayed its examples, so that the
``curl`` it prints answers with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nb2svc.errors import ServiceDidNotStart, UsageError
from nb2svc.registry import Version

ENVIRONMENT = "NB2SVC_SERVER"
DEFAULT_ADDRESS = "127.0.0.1:8765"
START_TIMEOUT = 60.0  # seconds for a started server to answer
LOAD_TIMEOUT = 600.0  # seconds for the server to load a new version and replay its examples
_LOOPBACK = ("127.0.0.1", "localhost")


def serving(version: Version, server: str | None = None) -> str:
    """The base URL of a registry server that serves ``version`` (``http://127.0.0.1:8765``), once it does."""
    root = str(version.path.parent.parent.resolve())
    host, port = _address(server or os.environ.get(ENVIRONMENT) or DEFAULT_ADDRESS)
    url = f"http://{host}:{port}"
    served = _registry_of(url)
    if served is None:
        if host not in _LOOPBACK:
            raise UsageError(f"no nb2svc server answers at {url}, and nb2svc.deploy starts one only on 127.0.0.1")
        served = _start(root, host, port)
    if served != root:
        raise UsageError(
            f"the nb2svc server at {url} serves the registry {served}, not {root}: deploy into that registry "
            f"(registry={served!r}), or choose another address (server='127.0.0.1:PORT' or {ENVIRONMENT})"
        )
    _wait_until_served(url, version)
    return url


def _address(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("http://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"the server address {address!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    return host, int(port)


def _registry_of(url: str) -> str | None:
    """The registry the server at ``url`` serves; None if nothing answers there."""
    try:
        found = _get(f"{url}/deployments")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise UsageError(
                f"the nb2svc server at {url} asks for an API key: set NB2SVC_API_KEY in this environment to one of "
                "its keys (the server started by deploy takes the keys from there too)"
            ) from None
        if exc.code != 404:
            raise ServiceDidNotStart(
                f"the nb2svc server at {url} answers GET /deployments with {exc.code}: see its log "
                f"(<registry>/.server-<port>.log if deploy started it)"
            ) from None
        found = None  # a server, but not a registry server
    except OSError:  # nothing listens there
        return None
    if not isinstance(found, dict) or not isinstance(found.get("registry"), str):
        raise UsageError(
            f"something that is not an nb2svc registry server answers at {url} (a single service's nb2svc serve?): "
            f"choose another address (server='127.0.0.1:PORT' or {ENVIRONMENT})"
        )
    return str(found["registry"])


def _start(root: str, host: str, port: int) -> str:
    log_path = Path(root) / f".server-{port}.log"
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nb2svc.local_server", str(os.getpid()), root, host, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # an interrupt of the notebook's cell is not the server's
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        served = _registry_of(f"http://{host}:{port}")
        if served is not None:
            if process.poll() is None:
                print(f"nb2svc: started a registry server at http://{host}:{port}/ (pid {process.pid}, log {log_path})")
            return served  # ours, or one another deploy started at the same moment
        if process.poll() is not None:
            break
        time.sleep(0.1)
    else:
        process.terminate()
    tail = "\n  ".join(log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-10:])
    raise ServiceDidNotStart(f"the registry server on {host}:{port} did not start (log {log_path}):\n  {tail}")


def _wait_until_served(url: str, version: Version) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT
    label = str(version.number)
    while time.monotonic() < deadline:
        deployments = _get(f"{url}/deployments")["deployments"]
        for deployment in deployments:
            for found in deployment["versions"] if deployment["name"] == version.name else ():
                if found["version"] == label and found["state"] == "ready":
                    return
                if found["version"] == label and found["state"] == "unready":
                    reason = found["reason"]
                    raise ServiceDidNotStart(
                        f"version {label} of {version.name} was published ({version.path}), but the server at {url} "
                        f"does not serve it ({reason['kind']}): {reason['message']}. "
                        f"/v1/{version.name}/latest still answers with the version before it."
                    )
        time.sleep(0.1)
    raise ServiceDidNotStart(
        f"the server at {url} did not load version {label} of {version.name} in {LOAD_TIMEOUT:g} s"
    )


def _get(url: str) -> Any:
    """GET ``url``'s JSON, with the first of NB2SVC_API_KEY's keys if the environment has some."""
    keys = [key.strip() for key in os.environ.get("NB2SVC_API_KEY", "").split(",") if key.strip()]
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.loads(response.read())


def _exit_with(parent: int) -> None:
    """Stop this server (SIGTERM: a graceful shutdown) once ``parent``, the process that started it, has ended."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> None:
    parent, root, host, port = argv
    threading.Thread(target=_exit_with, args=(int(parent),), daemon=True).start()
    from nb2svc.cli import cli

    cli(["serve", "--registry", root, "--host", host, "--port", port], prog_name="nb2svc")


if __name__ == "__main__":
    main(sys.argv[1:])
