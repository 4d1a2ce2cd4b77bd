"""Why capture fails: each reason once, for the kernel-side code that finds it and the builder that explains it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

NO_CLOUDPICKLE = "no_cloudpickle"
NOT_CALLABLE = "not_callable"
EXAMPLE_FAILED = "example_failed"
UNPICKLABLE = "unpicklable"
NOT_BATCHABLE = "not_batchable"
DOES_NOT_LOAD = "does_not_load"  # found outside the kernel: an artifact a fresh interpreter cannot load


@dataclass(frozen=True)
class NoCloudpickle:
    """The kernel's Python (``python``) cannot import cloudpickle."""

    reason: ClassVar[str] = NO_CLOUDPICKLE
    python: str


@dataclass(frozen=True)
class NotCallable:
    """Once the notebook has run, the endpoint's name holds something else, of type ``type``."""

    reason: ClassVar[str] = NOT_CALLABLE
    endpoint: str
    type: str


@dataclass(frozen=True)
class ExampleFailed:
    """Calling the endpoint on an ``--example`` value (``data``) raised ``exception``."""

    reason: ClassVar[str] = EXAMPLE_FAILED
    endpoint: str
    data: Any
    exception: str


@dataclass(frozen=True)
class Unpicklable:
    """The endpoint references ``variable``, of type ``type``, which cloudpickle refuses."""

    reason: ClassVar[str] = UNPICKLABLE
    endpoint: str
    variable: str
    type: str
    exception: str


@dataclass(frozen=True)
class NotBatchable:
    """The endpoint is marked batchable (``__nb2svc_batch__``) but cannot take a batch: ``problem`` says why."""

    reason: ClassVar[str] = NOT_BATCHABLE
    endpoint: str
    problem: str


Failure = NoCloudpickle | NotCallable | ExampleFailed | Unpicklable | NotBatchable
_BY_REASON: dict[str, type[Failure]] = {
    kind.reason: kind for kind in (NoCloudpickle, NotCallable, ExampleFailed, Unpicklable, NotBatchable)
}


def to_json(failure: Failure) -> dict[str, Any]:
    return {"reason": failure.reason, **dataclasses.asdict(failure)}


def from_json(data: dict[str, Any]) -> Failure:
    fields = dict(data)
    return _BY_REASON[fields.pop("reason")](**fields)


def type_name(obj: Any) -> str:
    """The type of ``obj`` as a failure names it: ``int``, ``_thread.lock``."""
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
