"""Loading a service directory: manifest, environment, artifacts, examples, in that order.

``load_service`` never raises: it gives a ``LoadedService`` ready to answer, or an
``UnreadyService`` whose ``NotReadyReason`` says what kind of thing went wrong and why. An
app (one service, a registry of several, a Ray Serve replica) is built from these.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .compare import compare
from .drift import IncompatibleEnvironment, check_environment
from .encoding import encode_json
from .endpoint import ArtifactRefused, Endpoint, load_endpoint
from .errors import CallFailed
from .invoke import answer
from .manifest import EndpointDescription, Manifest, ManifestError, read_manifest

logger = logging.getLogger("nb2svc.runtime")

# What went wrong, for a program to act on (`nb2svc verify` picks its exit code from it):
NotReadyKind = Literal["manifest", "environment", "artifact", "load_failed", "example_failed", "example_mismatch"]


@dataclass(frozen=True)
class NotReadyReason:
    kind: NotReadyKind
    message: str


@dataclass(frozen=True)
class LoadedService:
    """A service whose artifacts loaded and whose examples answered as in the training kernel."""

    service_dir: Path
    manifest: Manifest
    endpoints: tuple[Endpoint, ...]
    drift: tuple[str, ...]  # a warning per installed version that differs from the lock
    load_seconds: float


@dataclass(frozen=True)
class UnreadyService:
    """A service that cannot be trusted to answer; ``manifest`` is there if it could be read."""

    service_dir: Path
    reason: NotReadyReason
    manifest: Manifest | None = None


class _NotReady(Exception):
    def __init__(self, kind: NotReadyKind, message: str) -> None:
        super().__init__(message)
        self.reason = NotReadyReason(kind, message)


def load_service(service_dir: str | Path) -> LoadedService | UnreadyService:
    """Read the manifest, check the environment and every artifact's digest, unpickle, replay the examples."""
    service_dir = Path(service_dir)
    started = time.perf_counter()
    manifest = None
    try:
        manifest = _read(service_dir)
        drift = _checked_environment(manifest)
        endpoints = tuple(_loaded(service_dir, described) for described in manifest.endpoints)
        replay_examples(endpoints)
    except _NotReady as exc:
        logger.error("not ready: %s", exc.reason.message)
        return UnreadyService(service_dir, exc.reason, manifest)
    except Exception as exc:  # a fault nothing above foresaw: the process still stays up and says so
        logger.exception("not ready")
        reason = NotReadyReason("load_failed", f"the service did not load: {type(exc).__name__}: {exc}")
        return UnreadyService(service_dir, reason, manifest)
    return LoadedService(service_dir, manifest, endpoints, tuple(drift), time.perf_counter() - started)


def _read(service_dir: Path) -> Manifest:
    try:
        return read_manifest(service_dir)
    except ManifestError as exc:
        raise _NotReady("manifest", str(exc)) from exc


def _checked_environment(manifest: Manifest) -> list[str]:
    try:
        return check_environment(manifest)
    except IncompatibleEnvironment as exc:
        raise _NotReady("environment", str(exc)) from exc


def _loaded(service_dir: Path, described: EndpointDescription) -> Endpoint:
    try:
        return load_endpoint(service_dir, described)
    except ArtifactRefused as exc:
        raise _NotReady("artifact", str(exc)) from exc
    except Exception as exc:  # whatever unpickling raises, the process stays up and says so
        raise _NotReady("load_failed", f"the model did not load: {type(exc).__name__}: {exc}") from exc


def replay_examples(endpoints: tuple[Endpoint, ...]) -> None:
    """Every example recorded in the training kernel, answered here as it was there."""
    for endpoint in endpoints:
        for number, example in enumerate(endpoint.described.examples, start=1):
            try:
                actual = json.loads(encode_json(answer(endpoint.invoker, example.request["data"])))
            except Exception as exc:
                error = exc.error if isinstance(exc, CallFailed) else exc
                raise _NotReady(
                    "example_failed", f"example {number} of {endpoint.name} failed: {type(error).__name__}: {error}"
                ) from exc
            difference = compare(example.response, actual)
            if difference:
                raise _NotReady(
                    "example_mismatch",
                    f"example {number} of {endpoint.name} ({json.dumps(example.request)[:80]}) answers differently "
                    f"from the training kernel: {difference}",
                )
