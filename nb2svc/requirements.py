"""Stage 4: pins for what the service needs, at the versions the training kernel had."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from nb2svc.capture import Capture

# What nb2svc_runtime imports, besides cloudpickle (pinned to the version that serialized the artifacts).
RUNTIME_DISTRIBUTIONS = ("starlette", "uvicorn")


@dataclass(frozen=True)
class Pin:
    """``name==version``, and why the service needs it."""

    name: str
    version: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def pin_requirements(capture: Capture) -> tuple[Pin, ...]:
    """The notebook's imported distributions, then the runtime's own, one pin per distribution."""
    pins: dict[str, Pin] = {}
    for found in capture.distributions:
        modules = ", ".join(found.modules)
        pins[_key(found.name)] = Pin(found.name, found.version, f"imported by the notebook ({modules})")
    pins[_key("cloudpickle")] = Pin("cloudpickle", capture.cloudpickle_version, "serialized the artifacts")
    for name in RUNTIME_DISTRIBUTIONS:
        pins.setdefault(_key(name), Pin(name, importlib.metadata.version(name), "the service runtime"))
    return tuple(sorted(pins.values(), key=lambda pin: _key(pin.name)))


def format_requirements(pins: tuple[Pin, ...]) -> str:
    lines = ["# Pinned by nb2svc to the versions installed in the kernel that ran the notebook."]
    lines += [f"{pin}  # {pin.reason}" for pin in pins]
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
