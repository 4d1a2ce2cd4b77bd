"""``nb2svc.deploy(fn)``: the function as it is now, in the live session, published as the next version of a deployment.

Nothing of the notebook runs again: the function and the objects it references (the trained model) are
serialized right here, by the same stages as ``nb2svc build`` after its kernel run: capture by value, the
requirements observed in a fresh interpreter, a hashed lock, the service directory rendered; the directory is
published into the registry whole. Then a registry server on 127.0.0.1 (started once, in the background, if
none answers at the configured address) serves it at ``/v1/<name>/latest``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc.capture import capture_function
from nb2svc.errors import UsageError
from nb2svc.execute import BUILDING
from nb2svc.locking import LockOptions, lock_requirements
from nb2svc.observe import observe_requirements
from nb2svc.registry import REGISTRY_PORT, Registry, Version, check_name
from nb2svc.render import Origin, copy_runtime, model_version, render_service, write_description
from nb2svc.requirements import gather_requirements
from nb2svc.runtime.manifest import Manifest, NotebookDescription, read_manifest
from nb2svc.runtime.verified import record_verification, verification_of


@dataclass(frozen=True, repr=False)
class Deployment:
    """A published version: its name and number, its directory, and where it is served (``url``, if it is)."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    seconds: float
    url: str | None = None  # the registry server's base URL, http://127.0.0.1:PORT
    server_started: int | None = None  # the pid of the registry server this deploy started, if it did

    @property
    def latest_url(self) -> str:
        return f"{self.url or f'http://127.0.0.1:{REGISTRY_PORT}'}/v1/{self.name}/latest"

    @property
    def version_url(self) -> str:
        return f"{self.url or f'http://127.0.0.1:{REGISTRY_PORT}'}/v1/{self.name}/{self.version}"

    def curl(self) -> str:
        """The command that calls ``latest`` with the first recorded example (or a placeholder)."""
        return f"curl -s -XPOST {shlex.quote(self.latest_url)} -d {shlex.quote(json.dumps(self._example()))}"

    def requests_line(self) -> str:
        return f"requests.post({self.latest_url!r}, json={self._example()!r}).json()"

    def _example(self) -> Any:
        examples = self.manifest.endpoints[0].examples
        return examples[0].request if examples else {"data": "..."}

    def _started(self) -> str:
        return (
            f"Started a registry server at {self.url}/ (pid {self.server_started}; it stops when this kernel or "
            f"script does; its log: {self.path.parent.parent}/.server-{(self.url or '').rpartition(':')[2]}.log)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "url": self.latest_url if self.url else None,
            "version_url": self.version_url if self.url else None,
            "model_version": self.manifest.version,
            "seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        lines = [f"Deployed {self.name} version {self.version} ({self.path}) in {self.seconds:.1f} s."]
        if self.server_started:
            lines.append(f"  {self._started()}")
        if self.url:
            lines += [
                f"  POST {self.latest_url}  (this version: {self.version_url})",
                f"  {self.curl()}",
                f"  dashboard: {self.url}/",
            ]
        else:
            lines.append(f"  serve it: nb2svc serve --registry {shlex.quote(str(self.path.parent.parent))}")
        return "\n".join(lines)

    __repr__ = __str__  # what Jupyter shows as text, and the REPL

    def _repr_html_(self) -> str:
        escape = html.escape
        rows = [("version", escape(str(self.version))), ("model version", escape(self.manifest.version))]
        rows.append(("path", escape(str(self.path))))
        if self.url:
            links = [("latest", self.latest_url), ("this version", self.version_url), ("dashboard", f"{self.url}/")]
            rows += [(what, f"<a href='{escape(url)}' target='_blank'>{escape(url)}</a>") for what, url in links]
        table = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
        call = (
            f"<pre>{escape(self.curl())}</pre><pre>{escape(self.requests_line())}</pre>"
            if self.url
            else f"<p>Not served: <code>nb2svc serve --registry {escape(str(self.path.parent.parent))}</code></p>"
        )
        title = f"<strong>Deployed {escape(self.name)}</strong> in {self.seconds:.1f} s"
        if self.server_started:
            title += f"<br>{escape(self._started())}"
        return f"<div>{title}<table>{table}</table>{call}</div>"


def deploy(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    python_packages: Sequence[str] | None = None,
    python_version: str | None = None,
    examples: Sequence[Any] | None = None,
    registry: str | Path | None = None,
    serve: bool = True,
    server: str | None = None,
    lock_options: LockOptions | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Deployment | None:
    """Publish ``function`` (with everything it references, as it is now) as the next version of ``name``.

    In a notebook that ``nb2svc build`` is running, this publishes nothing and returns None: the build is the
    service (``nb2svc build --deploy`` publishes it), and a build has no side effects.

    Raises an ``Nb2svcError`` subclass on failure: nothing is published when capture, observation or the lock
    fail; if the server then refuses the published version (or stops), ``ServiceDidNotStart`` says so.

    ``name`` defaults to the function's name; ``python_packages`` adds or overrides requirements
    (``["scikit-learn==1.5.2"]``); ``examples`` are values of ``data`` the function is called with here, recorded,
    and replayed when the version loads. ``registry`` (default ``NB2SVC_REGISTRY`` or the user's data directory)
    holds the versions. With ``serve`` (the default) a registry server answers at ``server`` (``NB2SVC_SERVER``,
    default 127.0.0.1:8765), started in the background if none does, and this returns once it serves the new
    version at ``/v1/<name>/latest``.

    ``parameters`` are refused: no notebook runs here, so there is no ``parameters`` cell to override (the
    function is taken with the values the notebook's variables have now).
    """
    started = time.perf_counter()
    name = _deployment_name(function, name)
    if os.environ.get(BUILDING):
        return None
    if parameters:
        raise UsageError(
            "nb2svc.deploy takes the function as it is now, with the values the notebook's variables have: no "
            "notebook runs, so there are no parameters to inject. Set them in the notebook and run it again, or "
            f"build with them: nb2svc build NOTEBOOK -p NAME VALUE --deploy (given: {', '.join(parameters)})"
        )
    _check_python_version(python_version)
    packages = _packages(python_packages)
    data = _examples(examples)
    lock_options = lock_options or LockOptions()
    target = Registry(registry)
    written: list[Manifest] = []
    serving = None
    if serve:  # found (or started) first: a wrong address costs no deploy
        from nb2svc.local_server import registry_server  # only when serving: the HTTP client side

        serving = registry_server(target.root, server)

    def write(staging: Path) -> None:
        copy_runtime(staging)
        capture = capture_function(function, name, staging, data)
        observed = observe_requirements(capture, staging)
        requirements = gather_requirements(capture, observed, packages, python_packages_option="python_packages")
        minor = ".".join(capture.python_version.split(".")[:2])
        lock = lock_requirements(requirements, minor, lock_options, capture.python_executable)
        written.append(
            render_service(staging, name, Origin(_calling_notebook(), "deploy"), capture, requirements, lock)
        )

    version = target.publish(name, write)
    if serving is None:
        return Deployment(name, version.number, version.path, written[0], time.perf_counter() - started)
    from nb2svc.local_server import wait_until_served

    wait_until_served(serving, version)
    seconds = time.perf_counter() - started
    return Deployment(name, version.number, version.path, written[0], seconds, serving.url, serving.started_pid)


def publish_build(service_dir: Path, registry: str | Path | None = None) -> list[Version]:
    """``nb2svc build --deploy``: each endpoint of a built service becomes the next version of the deployment
    of its name, a service directory of its own (the build's lock, its one artifact)."""
    manifest = read_manifest(service_dir)
    target = Registry(registry)
    for endpoint in manifest.endpoints:  # all of them, before one is published
        check_name(endpoint.name, "endpoint name")
    published = []
    for endpoint in manifest.endpoints:
        one = dataclasses.replace(
            manifest, name=endpoint.name, endpoints=(endpoint,), version=model_version((endpoint,))
        )

        def write(staging: Path, manifest: Manifest = one) -> None:
            _copy_service(service_dir, staging, manifest)

        published.append(target.publish(endpoint.name, write))
    return published


def _copy_service(service_dir: Path, staging: Path, manifest: Manifest) -> None:
    """The service at ``service_dir`` reduced to ``manifest``'s endpoints: their artifacts, the same lock, and the
    files that describe it (manifest, app, Dockerfile, README) written for it."""
    copy_runtime(staging)
    (staging / "artifacts").mkdir()
    for endpoint in manifest.endpoints:
        shutil.copyfile(service_dir / endpoint.artifact, staging / endpoint.artifact)
    for lock_file in ("requirements.in", "requirements.txt"):
        shutil.copyfile(service_dir / lock_file, staging / lock_file)
    write_description(staging, manifest)
    source = read_manifest(service_dir).version
    record = verification_of(service_dir, source)
    if record is not None and record["ok"]:  # the whole service verified: each endpoint's examples answered
        record_verification(staging, manifest.version, True)


def _deployment_name(function: Any, name: str | None) -> str:
    if not callable(function):
        raise UsageError(
            f"nb2svc.deploy takes the function that answers requests; it was given a {type(function).__name__}"
        )
    chosen = name if name is not None else getattr(function, "__name__", "")
    if name is None and not chosen.isidentifier():
        raise UsageError(f"the function's name {chosen!r} cannot name a deployment: pass name='my_model'")
    return check_name(chosen)


def _check_python_version(requested: str | None) -> None:
    """``"3.11"`` (or ``"3.11.7"``: the minor is what counts) must be this Python's minor."""
    if requested is None:
        return
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not isinstance(requested, str):
        raise UsageError(f"python_version is a string such as {here!r}, not a {type(requested).__name__}")
    if ".".join(requested.split(".")[:2]) != here:
        raise UsageError(
            f"python_version={requested!r} differs from this Python ({here}): a function serialized by value "
            f"loads only on the Python minor that serialized it, and deploy has no notebook run to repeat in "
            f"{requested}. Build the saved notebook for it (nb2svc build NOTEBOOK --python-version {requested} "
            f"--deploy), deploy from a Python {requested} kernel, or leave python_version out to serve on {here}."
        )


def _packages(python_packages: Sequence[str] | None) -> tuple[str, ...]:
    if python_packages is None:
        return ()
    if isinstance(python_packages, str):
        raise UsageError(f"python_packages is a list of requirements, e.g. [{python_packages!r}]: put it in a list")
    return tuple(python_packages)


def _examples(examples: Iterable[Any] | None) -> list[Any]:
    if examples is None:
        return []
    if isinstance(examples, (str, bytes, dict)):
        raise UsageError(
            "examples is a list of values of data, one per example, e.g. examples=[[1, 3], [2, 5]]: "
            f"it was given a {type(examples).__name__}"
        )
    return list(examples)


def _calling_notebook() -> NotebookDescription:
    """The notebook (or script) this runs in, where it can be told: Jupyter names it in JPY_SESSION_NAME (a path
    that may be relative to the server's root, while the kernel runs in the notebook's folder), VS Code in
    ``__vsc_ipynb_file__``, a script is ``__main__.__file__``. Its digest is of the file as saved."""
    main = sys.modules.get("__main__")
    candidates = [os.environ.get("JPY_SESSION_NAME"), getattr(main, "__vsc_ipynb_file__", None)]
    if main is not None and not hasattr(sys, "ps1") and "ipykernel" not in sys.modules:
        candidates.append(getattr(main, "__file__", None))
    for candidate in filter(None, candidates):
        for path in (Path(candidate), Path.cwd() / Path(candidate).name):
            if path.is_file():
                return NotebookDescription(file=path.name, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    return NotebookDescription(file="", sha256="")
