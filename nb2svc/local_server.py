"""The registry server ``nb2svc.deploy`` answers from: the one at the configured address, or one started there.

The address is ``server=``, else ``NB2SVC_SERVER``, else 127.0.0.1:8765 (``registry.REGISTRY_PORT``). A server
that answers there must serve the same registry; if none answers, one is started on 127.0.0.1 in the background
(``nb2svc serve --registry``, its output in ``<registry>/.server-<port>.log``). It lives as long as the process
that started it (the notebook's kernel, or the script): when that process ends, the server stops too.

``deploy`` then waits until the server has loaded the new version and replayed its examples, so that the
``curl`` it prints answers with it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc.errors import ServiceDidNotStart, UsageError
from nb2svc.registry import REGISTRY_PORT, Version

ENVIRONMENT = "NB2SVC_SERVER"
START_TIMEOUT = 60.0  # seconds for a started server to answer
LOAD_TIMEOUT = 600.0  # seconds for the server to load a new version and replay its examples
_LOOPBACK = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class RegistryServer:
    """A registry server that answers: its base URL, and its process id if this process started it."""

    url: str  # http://127.0.0.1:8765
    started_pid: int | None = None


def registry_server(root: Path, server: str | None = None) -> RegistryServer:
    """The registry server for ``root`` at ``server`` (else NB2SVC_SERVER, else 127.0.0.1:8765), started there if
    nothing answers. Checked before anything is published: a wrong address costs no deploy."""
    registry = str(root.resolve())
    host, port = _address(server or os.environ.get(ENVIRONMENT) or f"127.0.0.1:{REGISTRY_PORT}")
    url = f"http://{host}:{port}"
    found = _answering(url)
    started = None
    if found is None:
        if host not in _LOOPBACK:
            raise UsageError(f"no nb2svc server answers at {url}, and nb2svc.deploy starts one only on 127.0.0.1")
        found, started = _start(registry, host, port)
    if found["registry"] != registry:
        raise UsageError(
            f"the nb2svc server at {url} serves the registry {found['registry']}, not {registry}: deploy into that "
            f"registry (registry={found['registry']!r}), or choose another address (server='127.0.0.1:PORT' or "
            f"{ENVIRONMENT})"
        )
    return RegistryServer(url, started)


def wait_until_served(server: RegistryServer, version: Version) -> None:
    """Return once ``server`` serves ``version`` (loaded, examples replayed); ServiceDidNotStart saying what
    happened (the version is published all the same) if it refuses it, stops, or takes too long."""
    published = f"version {version.number} of {version.name} was published ({version.path}), but"
    deadline = time.monotonic() + LOAD_TIMEOUT
    label = str(version.number)
    while time.monotonic() < deadline:
        try:
            deployments = _get(f"{server.url}/deployments")["deployments"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ServiceDidNotStart(
                f"{published} the server at {server.url} stopped answering ({exc}): serve the registry with "
                f"nb2svc serve --registry {shlex.quote(str(version.path.parent.parent))}"
            ) from None
        found = [v for d in deployments if d["name"] == version.name for v in d["versions"] if v["version"] == label]
        if found and found[0]["state"] == "ready":
            return
        if found and found[0]["state"] == "unready":
            reason = found[0]["reason"]
            raise ServiceDidNotStart(
                f"{published} the server at {server.url} does not serve it ({reason['kind']}): {reason['message']}. "
                f"/v1/{version.name}/latest still answers with the version before it."
            )
        time.sleep(0.1)
    raise ServiceDidNotStart(
        f"{published} the server at {server.url} did not load it in {LOAD_TIMEOUT:g} s: see the server's log"
    )


def wait_until_gone(server: RegistryServer, removed: set[tuple[str, int]], timeout: float = 10.0) -> bool:
    """Whether ``server`` has stopped serving each ``(name, number)`` of ``removed`` within ``timeout`` seconds
    (it reads the registry a few times a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployments = _get(f"{server.url}/deployments")["deployments"]
        served = {(d["name"], int(v["version"])) for d in deployments for v in d["versions"]}
        if not served & removed:
            return True
        time.sleep(0.1)
    return False


def _address(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("http://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"the server address {address!r} is not HOST:PORT (e.g. 127.0.0.1:{REGISTRY_PORT})")
    return host, int(port)


def _answering(url: str) -> dict[str, Any] | None:
    """What the registry server at ``url`` says of itself (``registry``, ``pid``); None if nothing answers."""
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
    except ValueError:  # something that does not answer JSON
        found = None
    except OSError:  # nothing listens there
        return None
    if not isinstance(found, dict) or not isinstance(found.get("registry"), str):
        raise UsageError(
            f"something that is not an nb2svc registry server answers at {url} (a single service's nb2svc serve?): "
            f"choose another address (server='127.0.0.1:PORT' or {ENVIRONMENT})"
        )
    return found


def _start(registry: str, host: str, port: int) -> tuple[dict[str, Any], int | None]:
    """Start a registry server at ``host:port``; what it says of itself, and its pid. If another deploy started
    one there at the same moment, that one answers (and its pid is not ours: None)."""
    log_path = Path(registry) / f".server-{port}.log"
    Path(registry).mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nb2svc.local_server", str(os.getpid()), registry, host, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # an interrupt of the notebook's cell is not the server's
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = _answering(f"http://{host}:{port}")
        if found is not None:
            ours = found.get("pid") == process.pid
            if not ours:
                process.wait()  # it could not bind the port the other one holds: reaped
            return found, process.pid if ours else None
        if process.poll() is not None:
            break
        time.sleep(0.1)
    else:
        process.terminate()
        process.wait()
    tail = "\n  ".join(log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-10:])
    raise ServiceDidNotStart(f"the registry server on {host}:{port} did not start (log {log_path}):\n  {tail}")


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
    from nb2svc.serve import serve_registry

    serve_registry(root, host=host, port=int(port), local_only=True)


if __name__ == "__main__":
    main(sys.argv[1:])
