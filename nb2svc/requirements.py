"""What the service needs, and why: observed distributions pinned to the training kernel's versions."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping

from packaging.requirements import InvalidRequirement, Requirement as PackagingRequirement
from packaging.utils import canonicalize_name

from nb2svc.capture import Capture, Distribution
from nb2svc.errors import UsageError
from nb2svc.runtime.manifest import RequirementEntry, RequirementReason

# What nb2svc_runtime imports besides cloudpickle and the standard library (cloudpickle is pinned to the
# version that serialized the artifacts), then the fast parts of the request path: orjson (the runtime's JSON,
# the standard library's where it is missing), uvloop and httptools (uvicorn takes them by itself where installed).
RUNTIME_DISTRIBUTIONS = ("starlette", "uvicorn", "fastjsonschema", "prometheus-client", "orjson", "uvloop", "httptools")
# Pinned where the builder has them: a platform with no such distribution (uvloop on Windows) builds a service
# without it, which runs on the standard library's parts instead, rather than failing the build.
FAST_PARTS = frozenset({"orjson", "uvloop", "httptools"})
# Never a requirement of the service: the builder itself.
BUILDER = "nb2svc"
SERVICE_RUNTIME = RequirementReason("runtime", "the service runtime")
SERIALIZED_THE_ARTIFACTS = RequirementReason("runtime", "serialized the artifacts")
REQUIREMENTS_FILE = RequirementReason("user", "--requirements")


def gather_requirements(
    capture: Capture,
    observed: Mapping[RequirementReason, Iterable[Distribution]],
    python_packages: Iterable[str] = (),
    requirements_file: str | None = None,
    python_packages_option: str = "--python-package",
    runtime_unpinned: frozenset[str] = frozenset(),
) -> tuple[RequirementEntry, ...]:
    """Observed distributions, the runtime's own, then ``--python-package`` specs (which override by name).

    ``observed`` maps a reason (``artifact_load``, "loading my_fn") to the distributions it brought in;
    each distribution's reason adds the modules it was seen through: "loading my_fn (joblib)".
    ``python_packages_option`` is how the user gave them, for messages and reasons (``python_packages=``).
    ``runtime_unpinned`` names runtime distributions whose builder's version has no distribution for the
    target Python (a build for another Python): the resolver picks their version.
    With ``requirements_file`` (the text of ``--requirements FILE``) nothing observed is used:
    the file's lines stand instead, and the runtime's packages join them.
    """
    found: dict[str, RequirementEntry] = {}

    def add(name: str, spec: str, reason: RequirementReason, override: bool = False) -> None:
        key = canonicalize_name(name)
        if key == BUILDER:
            return
        if key in found and not override and found[key].spec != spec:
            # Two versions of one package (the notebook's and the runtime's): both go to the resolver,
            # which refuses them as a conflict, so the build fails instead of the service.
            found[f"{key} {spec}"] = RequirementEntry(name, spec, (reason,))
        elif key in found and not override:
            old = found[key]
            found[key] = RequirementEntry(old.name, old.spec, old.reasons + (reason,))
        else:
            found[key] = RequirementEntry(name, spec, (reason,))

    if requirements_file is None:
        for reason, distributions in observed.items():
            for distribution in distributions:
                add(distribution.name, _pin(distribution), _through_modules(reason, distribution))
    else:
        for spec in _lines(requirements_file):
            add(_parse(spec, "--requirements").name, spec, REQUIREMENTS_FILE)
    add("cloudpickle", f"cloudpickle=={capture.cloudpickle_version}", SERIALIZED_THE_ARTIFACTS)
    for name, version in runtime_pins():
        add(name, name if name in runtime_unpinned else f"{name}=={version}", SERVICE_RUNTIME)
    for spec in python_packages:
        reason = RequirementReason("user", python_packages_option)
        add(_parse(spec, python_packages_option).name, spec, reason, override=True)
    return tuple(sorted(found.values(), key=lambda requirement: canonicalize_name(requirement.name)))


def runtime_pins() -> list[tuple[str, str]]:
    """Each runtime distribution with the builder's installed version; the fast parts only where installed."""
    pins = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            pins.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            if name not in FAST_PARTS:
                raise
    return pins


def format_requirements_in(requirements: Iterable[RequirementEntry]) -> str:
    """requirements.in: one line per requirement, its reasons as comments below it."""
    lines = ["# What the service needs, as nb2svc observed it; nb2svc locks it into requirements.txt."]
    for requirement in requirements:
        lines.append(requirement.spec)
        lines += [f"    # {reason.text}" for reason in requirement.reasons]
    return "\n".join(lines) + "\n"


def _through_modules(reason: RequirementReason, distribution: Distribution) -> RequirementReason:
    return RequirementReason(reason.source, f"{reason.text} ({', '.join(distribution.modules)})")


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
