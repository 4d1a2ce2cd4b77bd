"""What the service needs, and why: observed distributions pinned to the training kernel's versions."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement as PackagingRequirement
from packaging.utils import canonicalize_name

from nb2svc.capture import Capture
from nb2svc.observe import Distribution
from nb2svc.errors import UsageError

# What nb2svc_runtime imports besides cloudpickle and the standard library (pinned to the version that serialized the artifacts).
RUNTIME_DISTRIBUTIONS = ("starlette", "uvicorn", "fastjsonschema", "prometheus-client")
# Never a requirement of the service: the builder itself.
BUILDER = "nb2svc"


@dataclass(frozen=True)
class Requirement:
    """One line of requirements.in (``spec``), and every reason the service needs it."""

    name: str
    spec: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "spec": self.spec, "reasons": list(self.reasons)}


def gather_requirements(
    capture: Capture,
    observed: Mapping[str, Iterable[Distribution]],
    python_packages: Iterable[str] = (),
    requirements_file: str | None = None,
) -> tuple[Requirement, ...]:
    """Observed distributions, the runtime's own, then ``--python-package`` specs (which override by name).

    ``observed`` maps a reason ("loading my_fn") to the distributions it brought in.
    With ``requirements_file`` (the text of ``--requirements FILE``) nothing observed is used:
    the file's lines stand instead, and the runtime's packages join them.
    """
    found: dict[str, Requirement] = {}

    def add(name: str, spec: str, reason: str, override: bool = False) -> None:
        key = canonicalize_name(name)
        if key == BUILDER:
            return
        if key in found and not override and found[key].spec != spec:
            # Two versions of one package (the notebook's and the runtime's): both go to pip-compile,
            # which refuses them as a conflict, so the build fails instead of the service.
            found[f"{key} {spec}"] = Requirement(name, spec, (reason,))
        elif key in found and not override:
            old = found[key]
            found[key] = Requirement(old.name, old.spec, old.reasons + (reason,))
        else:
            found[key] = Requirement(name, spec, (reason,))

    if requirements_file is None:
        for reason, distributions in observed.items():
            for distribution in distributions:
                add(distribution.name, _pin(distribution), f"{reason} ({', '.join(distribution.modules)})")
    else:
        for spec in _lines(requirements_file):
            add(_parse(spec, "--requirements").name, spec, "--requirements")
    add("cloudpickle", f"cloudpickle=={capture.cloudpickle_version}", "serialized the artifacts")
    for name in RUNTIME_DISTRIBUTIONS:
        add(name, f"{name}=={importlib.metadata.version(name)}", "the service runtime")
    for spec in python_packages:
        add(_parse(spec, "--python-package").name, spec, "--python-package", override=True)
    return tuple(sorted(found.values(), key=lambda requirement: canonicalize_name(requirement.name)))


def format_requirements_in(requirements: Iterable[Requirement]) -> str:
    lines = ["# What the service needs, as nb2svc observed it; `pip-compile` locks it into requirements.txt."]
    for requirement in requirements:
        lines.append(f"{requirement.spec}")
        lines += [f"    # {reason}" for reason in requirement.reasons]
    return "\n".join(lines) + "\n"


def _pin(distribution: Distribution) -> str:
    return f"{distribution.name}=={distribution.version}"


def _parse(spec: str, option: str) -> PackagingRequirement:
    try:
        return PackagingRequirement(spec)
    except InvalidRequirement as exc:
        raise UsageError(f"{option} {spec!r} is not a requirement pip understands: {exc}") from exc


def _lines(text: str) -> list[str]:
    stripped = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith("-")]
