"""The errors a failed lock turns into, built from the facts each backend reads in its own resolver's output."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from nb2svc.errors import IndexUnreachable, LockConflict, PackageNotOnIndex
from nb2svc.locking.options import LockOptions
from nb2svc.runtime.manifest import RequirementEntry, plain

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Demand:
    """One side of a conflict: a requirement, and the package that asks for it."""

    spec: str  # "numpy>=2.0.2"
    required_by: str | None  # "pandas 3.1.1"; None when requirements.in asks for it


def index_unreachable(options: LockOptions, detail: str) -> IndexUnreachable:
    return IndexUnreachable(
        f"could not reach {_index_name(options)} to lock the requirements:\n  {detail[:300]}\n"
        "Check the network or --index-url, or lock without a resolver: --offline (no hashes).",
        index_url=options.index_url,
    )


def not_on_index(name: str, requirements: tuple[RequirementEntry, ...], options: LockOptions) -> PackageNotOnIndex:
    """``name`` is not on the index: which requirement that is, why the service needs it, and the ways out."""
    requirement = next((r for r in requirements if canonicalize_name(r.name) == canonicalize_name(name)), None)
    spec = requirement.spec if requirement else name
    why = _reason_texts(requirement) if requirement else "a dependency of the requirements"
    return PackageNotOnIndex(
        f"{spec} is not on {_index_name(options)} ({why}). It may be installed from a local path, in editable mode, "
        "or from a private index. Ways out: --python-package 'NAME @ URL' (a wheel or VCS URL pip can fetch), "
        "--extra-index-url URL for a private index, or --offline to pin what is installed (no hashes).",
        distribution=requirement.name if requirement else name,
        reasons=plain(requirement.reasons) if requirement else [],
    )


def conflict(
    account: Sequence[str], demands: Sequence[Demand], requirements: tuple[RequirementEntry, ...], output: str
) -> LockConflict:
    """The resolver's ``account`` of a conflict, then who asks for what: requirements.in's reasons, or a package.

    With neither, the last lines of the resolver's ``output``.
    """
    said = [*account, *(_described(demand, requirements) for demand in demands)] or output.strip().splitlines()[-5:]
    lines = list(dict.fromkeys(said))
    explanation = "\n".join(f"  {line}" for line in lines)
    return LockConflict(
        f"the requirements cannot be installed together:\n{explanation}\n"
        "Change or drop the --python-package that asks for a different version, or align the notebook's "
        "packages and rebuild.",
        conflict=lines,
    )


def lock_failed(output: str) -> LockConflict:
    """A failure the backend does not recognise: its own words."""
    return LockConflict(f"locking the requirements failed:\n{output.strip()[-3000:]}")


def _index_name(options: LockOptions) -> str:
    return options.index_url or "the package index"


def _reason_texts(requirement: RequirementEntry) -> str:
    return "; ".join(reason.text for reason in requirement.reasons)


def _described(demand: Demand, requirements: tuple[RequirementEntry, ...]) -> str:
    if demand.required_by:
        return f"{demand.spec} (required by {demand.required_by})"
    return f"{demand.spec} ({_asked_for_by(demand.spec, requirements)})"


def _asked_for_by(spec: str, requirements: tuple[RequirementEntry, ...]) -> str:
    """Why requirements.in holds ``spec``: the reasons of its line (of each line of that name if none is ``spec``)."""
    named = _NAME.match(spec)
    same_name = [r for r in requirements if named and canonicalize_name(r.name) == canonicalize_name(named.group(0))]
    exact = [r for r in same_name if r.spec.replace(" ", "") == spec.replace(" ", "")]
    return "; ".join(_reason_texts(r) for r in exact or same_name) or "requirements.in"
