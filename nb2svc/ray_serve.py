"""Run a service directory on a Ray cluster with Ray Serve, through the directory's own ``ray_app.py``.

Builder side: ray is imported here only, and only when ``--ray`` is asked for (``pip install 'nb2svc[ray]'``).
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from nb2svc.errors import ServiceDidNotStart, ServiceDirInvalid, UsageError
from nb2svc.serve import _settings_from, check_service_dir

INSTALL_HINT = "Ray Serve is not installed: pip install 'nb2svc[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and how many: ``address`` of the cluster (None: ``RAY_ADDRESS`` or a local one), ``replicas`` fixed
    or ``autoscale`` (min, max)."""

    address: str | None = None
    replicas: int | None = None
    autoscale: tuple[int, int] | None = None


def parse_autoscale(value: str) -> tuple[int, int]:
    """``MIN:MAX`` -> (min, max), refused unless 0 <= MIN <= MAX and MAX >= 1."""
    low, sep, high = value.partition(":")
    try:
        bounds = (int(low), int(high)) if sep else None
    except ValueError:
        bounds = None
    if bounds is None or not 0 <= bounds[0] <= bounds[1] or bounds[1] < 1:
        raise UsageError(f"--autoscale {value}: give MIN:MAX replicas, whole numbers with 0 <= MIN <= MAX, MAX >= 1")
    return bounds


def serve_ray(
    service_dir: str | Path,
    options: RayOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: dict[str, str] | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Deploy ``service_dir`` on the Ray cluster, its HTTP proxy on ``host:port``, until SIGINT or SIGTERM;
    then delete the application (the cluster keeps running)."""
    service_dir = Path(service_dir).resolve()
    check_service_dir(service_dir)
    _settings_from(settings)
    ray, serve = _import_ray()
    ray_app = _import_ray_app(service_dir)
    name = service_dir.name
    application = ray_app.application(options.replicas, options.autoscale, settings, name)
    ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which sets handlers of its own
        signal.signal(number, lambda signum, frame: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(application, name=name, route_prefix="/")
        except RuntimeError as exc:  # Ray Serve's "Deploying application ... failed"
            raise ServiceDidNotStart(_why_not_deployed(serve, service_dir, exc), path=str(service_dir)) from None
        announce(f"serving {service_dir} on Ray Serve at http://{host}:{port} (application {name!r}); Ctrl-C stops")
        stop.wait()
    finally:
        serve.delete(name)
        ray.shutdown()


def _why_not_deployed(serve: Any, service_dir: Path, exc: RuntimeError) -> str:
    """What Ray Serve says of the replicas that did not start: the runtime's reason when it is one (a replica
    whose service is not ready fails its first health check), otherwise the end of Ray's message."""
    name = service_dir.name
    status = serve.status().applications.get(name)
    said = "\n".join(d.message for d in status.deployments.values() if d.message) if status else ""
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    reasons = [line.removeprefix("RuntimeError: ") for line in lines if line.startswith("RuntimeError: service not")]
    detail = "\n  ".join(dict.fromkeys(reasons) or lines[-8:] or [str(exc)])
    return (
        f"Ray Serve could not start the replicas of {name}:\n  {detail}\n"
        f"Check the service on this machine with `nb2svc verify {service_dir}`; the cluster's Python needs its "
        "requirements.txt installed."
    )


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray, serve


def _import_ray_app(service_dir: Path) -> ModuleType:
    """The directory's ``ray_app`` module, imported under that name (the replicas import it by the same name
    from the directory, which ``application`` puts on their ``PYTHONPATH``)."""
    path = service_dir / "ray_app.py"
    if not path.is_file():
        raise ServiceDirInvalid(
            f"{service_dir} has no ray_app.py: it was built by an nb2svc without Ray Serve. Build it again.",
            path=str(service_dir),
        )
    spec = importlib.util.spec_from_file_location("ray_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ray_app"] = module
    spec.loader.exec_module(module)
    return module
