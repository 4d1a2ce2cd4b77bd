"""Ray Serve entry point of this service: `serve run ray_app:app` in this directory, or `nb2svc serve DIR --ray`.

Each replica loads the model itself, in its constructor, from this directory: nothing is pickled through
Ray's object store. On a cluster of several nodes the directory must be at this same path on every node, and
the nodes' Python must have requirements.txt installed. A replica whose model did not load fails Ray's
health check (`check_health`), so it takes no traffic and Ray replaces it.

Replicas: NB2SVC_RAY_REPLICAS (default 1) or NB2SVC_RAY_AUTOSCALE=MIN:MAX, or `application(...)`'s arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import serve

SERVICE_DIR = Path(__file__).resolve().parent


@serve.ingress()  # the app is built per replica, from what its constructor loaded: __serve_build_asgi_app__
class Nb2svcReplica:
    """One replica: the service directory loaded by the runtime, answered by the runtime's own Starlette app."""

    def __init__(self) -> None:
        from nb2svc_runtime.load import load_service  # the replica's PYTHONPATH has SERVICE_DIR: see application()

        self.loaded = load_service(SERVICE_DIR)

    def __serve_build_asgi_app__(self) -> Any:
        from nb2svc_runtime.app import build_app
        from nb2svc_runtime.settings import Settings

        return build_app([self.loaded], Settings.from_environment())

    def check_health(self) -> None:
        """Ray calls this every few seconds: a service that did not load is an unhealthy replica."""
        from nb2svc_runtime.load import UnreadyService

        if isinstance(self.loaded, UnreadyService):
            reason = self.loaded.reason
            raise RuntimeError(f"service not ready ({reason.kind}): {reason.message}")


def application(
    replicas: int | None = None,
    autoscale: tuple[int, int] | None = None,
    settings: dict[str, str] | None = None,
    name: str | None = None,
) -> Any:
    """The bound application: ``replicas`` fixed, or ``autoscale`` (min, max) by Ray Serve's autoscaler;
    ``settings`` are the runtime's NB2SVC_* variables, set in every replica."""
    if replicas is None and autoscale is None:
        replicas, autoscale = _replicas_from_environment()
    scaling: dict[str, Any] = {"num_replicas": replicas or 1}
    if autoscale is not None:
        scaling = {"autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1]}}
    variables = {k: v for k, v in os.environ.items() if k.startswith("NB2SVC_") and not k.startswith("NB2SVC_RAY_")}
    variables.update(settings or {})
    python_path = os.pathsep.join(p for p in (str(SERVICE_DIR), os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {**variables, "PYTHONPATH": python_path}}
    deployment = serve.deployment(
        Nb2svcReplica,
        name=name or SERVICE_DIR.name,
        ray_actor_options={"runtime_env": runtime_env},
        **scaling,
    )
    return deployment.bind()


def _replicas_from_environment() -> tuple[int | None, tuple[int, int] | None]:
    autoscale = os.environ.get("NB2SVC_RAY_AUTOSCALE")
    if autoscale:
        low, _, high = autoscale.partition(":")
        return None, (int(low), int(high))
    return int(os.environ.get("NB2SVC_RAY_REPLICAS", "1")), None


app = application()
