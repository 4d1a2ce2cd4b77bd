"""The manifest: the one contract between the builder, which writes ``manifest.json``, and everything that reads it.

Standard library only (it runs in the service, in the training kernel and in the builder).
``Manifest.to_json()`` writes it; ``read_manifest(service_dir)`` reads it back into the same
types, refusing a manifest of another format with a message that says what to do.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

MANIFEST_FORMAT = 5  # raised whenever a field is added, removed or changes meaning
FILENAME = "manifest.json"

# Why a requirement is in requirements.in: who observed it.
ReasonSource = Literal["notebook", "artifact_load", "import_statement", "example_call", "runtime", "user"]
REASON_SOURCES: tuple[str, ...] = typing.get_args(ReasonSource)
IMPORTED_BY_THE_MODEL: frozenset[str] = frozenset({"notebook", "artifact_load", "import_statement", "example_call"})


class ManifestError(Exception):
    """``manifest.json`` is missing, unreadable, of another format, or lacks a field."""


@dataclass(frozen=True)
class Example:
    """A call the notebook made (or ``--example`` asked for): the request body and the answer recorded in the kernel."""

    request: Any  # {"data": ...}
    response: Any  # {"data": ...} (and "errors" for a batch)
    source: str = "notebook"  # "notebook", "command line" (--example) or "deploy" (nb2svc.deploy's examples=)


@dataclass(frozen=True)
class ParameterDescription:
    name: str
    kind: str  # inspect.Parameter kind, lower case: positional_or_keyword, keyword_only...
    schema: dict[str, Any]  # JSON Schema of the JSON value that stands for it
    required: bool
    annotation: str | None = None  # as written in the notebook
    default: Any = None  # the default, when it is a JSON value (else see the signature text)


@dataclass(frozen=True)
class RecordedFrame:
    """The columns and dtypes of the DataFrames the notebook passed to a DataFrame endpoint."""

    columns: tuple[str, ...]
    dtypes: dict[str, str]


@dataclass(frozen=True)
class BatchDescription:
    """A batchable function (``nb2svc.batch``): a list of inputs in, a list of as many results out.

    Concurrent requests are gathered into one call of at most ``max_batch_size`` inputs, as soon as the
    previous call is done; ``max_wait_ms`` above 0 holds a call that long for more inputs to arrive."""

    max_batch_size: int = 128
    max_wait_ms: float = 0.0


@dataclass(frozen=True)
class EndpointDescription:
    """One endpoint, described once: where its artifact is, how it is called, and what it answered in the kernel."""

    name: str
    cell: int  # the notebook cell that defines it, counting every cell from 1 (0: deployed from a live session)
    artifact: str  # relative to the service directory, inside artifacts/
    sha256: str
    bytes: int
    signature: str  # as Python prints it: "(a: int, b: float = 0.5) -> float"
    doc: str | None
    is_async: bool
    parameters: tuple[ParameterDescription, ...]
    returns: dict[str, Any]  # JSON Schema of the result
    dataframe: bool  # one parameter, a pandas DataFrame: a batch is one call
    batch: BatchDescription | None = None  # None: the function answers one input per call
    recorded_frame: RecordedFrame | None = None
    examples: tuple[Example, ...] = ()
    calls_seen: int = 0  # the calls the notebook made of it, recorded or not
    unrecorded: tuple[str, ...] = ()  # why calls could not be recorded as examples, each reason once

    @property
    def route(self) -> str:
        return f"/v1/{self.name}/latest"


@dataclass(frozen=True)
class RequirementReason:
    source: ReasonSource
    text: str  # in words, for people: "loading my_fn (joblib)"


@dataclass(frozen=True)
class RequirementEntry:
    name: str
    spec: str  # the line of requirements.in
    reasons: tuple[RequirementReason, ...]


@dataclass(frozen=True)
class LockDescription:
    tool: str  # "uv pip compile 0.9.1", "pip-compile 7.5.1", "installed metadata (offline)"
    python_version: str  # X.Y
    hashes: bool
    offline: bool
    index_url: str | None
    extra_index_urls: tuple[str, ...]
    pins: dict[str, str]  # canonical name -> version, every package of requirements.txt


@dataclass(frozen=True)
class PythonDescription:
    version: str  # X.Y.Z of the Python that made the artifacts (the training kernel's, or the target's)
    minor: str  # X.Y: the artifacts load only there
    implementation: str


@dataclass(frozen=True)
class VersionChange:
    trained: str  # the training kernel's version, which has no distribution for the target Python
    chosen: str  # what the target's environment has instead (--allow-other-versions)


@dataclass(frozen=True)
class Retarget:
    """Built for another Python than the training kernel's: the notebook ran again in the target Python, and
    every example the training kernel recorded answered the same from the artifacts made there."""

    trained_python: str  # X.Y.Z of the training kernel
    examples_compared: int  # all answered as in the training kernel (else there is no build)
    changed_versions: dict[str, VersionChange] = field(default_factory=dict)


@dataclass(frozen=True)
class NotebookDescription:
    file: str  # "" when nb2svc.deploy could not tell which notebook called it
    sha256: str  # of the file as saved ("" when unknown): a deployed function may come from unsaved cells


# How the endpoints were made: "build" (`nb2svc build` ran the notebook) or "deploy" (`nb2svc.deploy` serialized
# a function of a live session, without running anything again).
Source = Literal["build", "deploy"]


@dataclass(frozen=True)
class CellTime:
    cell: int
    seconds: float


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str  # digest of the artifacts: changes exactly when they do
    nb2svc_version: str
    built_at: str
    notebook: NotebookDescription
    source: Source
    python: PythonDescription
    cloudpickle_version: str
    endpoints: tuple[EndpointDescription, ...]
    lock: LockDescription
    requirements: tuple[RequirementEntry, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)  # the `parameters` cell's overrides
    cells: tuple[CellTime, ...] = ()
    retarget: Retarget | None = None  # None: the artifacts were made by the training kernel itself
    manifest_format: int = MANIFEST_FORMAT

    def imported_packages(self) -> dict[str, str]:
        """The pins of the distributions the notebook or its functions imported (not the runtime's, not the user's)."""
        imported = {
            _canonical(r.name)
            for r in self.requirements
            if any(reason.source in IMPORTED_BY_THE_MODEL for reason in r.reasons)
        }
        return {name: pin for name, pin in self.lock.pins.items() if name in imported}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = plain(self)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        found = data.get("manifest_format") if isinstance(data, dict) else None
        if found != MANIFEST_FORMAT:
            raise ManifestError(_format_mismatch(found, data))
        return parse(cls, data)


def read_manifest(service_dir: str | Path) -> Manifest:
    """The manifest of ``service_dir``; ManifestError if it is missing, not JSON, of another format or incomplete."""
    path = Path(service_dir) / FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing: this is not a service directory written by `nb2svc build`") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} cannot be read as JSON ({exc}): rebuild the service") from None
    return Manifest.from_dict(data)


def _format_mismatch(found: Any, data: Any) -> str:
    built_by = data.get("nb2svc_version", "an unknown nb2svc") if isinstance(data, dict) else "an unknown nb2svc"
    if isinstance(found, int) and found > MANIFEST_FORMAT:
        return (
            f"manifest.json is format {found} (written by nb2svc {built_by}) and this runtime reads format "
            f"{MANIFEST_FORMAT}: the service directory's runtime is older than its manifest. Rebuild the service "
            "with one nb2svc, or copy the nb2svc_runtime that came with the manifest."
        )
    return (
        f"manifest.json is format {found if found is not None else '1 (no manifest_format)'} (written by nb2svc "
        f"{built_by}) and this runtime reads format {MANIFEST_FORMAT}: rebuild the service with this nb2svc."
    )


T = TypeVar("T")


def parse(kind: type[T], data: Any) -> T:
    """``data`` (parsed JSON) as ``kind``, one of this module's dataclasses; ManifestError naming a missing field."""
    return _build(kind.__name__, data, kind.__name__)  # type: ignore[no-any-return]


def _canonical(name: str) -> str:
    """PEP 503's normalized name, as the lock's pins are keyed."""
    return re.sub(r"[-_.]+", "-", name).lower()


def plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


_LEAVES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda value: isinstance(value, str)),
    "int": ("an integer", lambda value: type(value) is int),
    "float": ("a number", lambda value: type(value) in (int, float)),
    "bool": ("true or false", lambda value: type(value) is bool),
    "ReasonSource": (f"one of {', '.join(REASON_SOURCES)}", lambda value: value in REASON_SOURCES),
}


def _leaf(kind: str, data: Any, where: str) -> Any:
    """A JSON value of the manifest, checked against its field's type (``Any`` takes anything)."""
    if kind.startswith("dict["):
        expected, fits = "an object", isinstance(data, dict)
    elif kind in _LEAVES:
        expected, check = _LEAVES[kind]
        fits = check(data)
    else:
        return data
    if not fits:
        raise ManifestError(
            f"manifest.json: {where} must be {expected}, not {json.dumps(data)[:40]}: rebuild the service"
        )
    return data


def _build(kind: str, data: Any, where: str) -> Any:
    """``data`` (parsed JSON) as the type named ``kind``, read from the annotation's text (so that it works the
    same on every Python): a dataclass of this module, ``tuple[X, ...]``, ``dict[str, X]``, ``X | None``, or a JSON
    value as it is."""
    if kind.endswith(" | None"):
        return None if data is None else _build(kind[: -len(" | None")], data, where)
    if kind.startswith("tuple["):
        if not isinstance(data, list):
            raise ManifestError(f"manifest.json: {where} must be a list")
        element = kind[len("tuple[") : -len(", ...]")]
        return tuple(_build(element, item, f"{where}[{i}]") for i, item in enumerate(data))
    if kind.startswith("dict[str, ") and dataclasses.is_dataclass(globals().get(kind[len("dict[str, ") : -1])):
        if not isinstance(data, dict):
            raise ManifestError(f"manifest.json: {where} must be an object")
        element = kind[len("dict[str, ") : -1]
        return {key: _build(element, item, f"{where}[{key!r}]") for key, item in data.items()}
    described = globals().get(kind)
    if not (isinstance(described, type) and dataclasses.is_dataclass(described)):
        return _leaf(kind, data, where)
    if not isinstance(data, dict):
        raise ManifestError(f"manifest.json: {where} must be an object")
    values = {}
    for f in dataclasses.fields(described):
        if f.name in data:
            values[f.name] = _build(str(f.type), data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestError(f"manifest.json: {where} has no {f.name!r}: rebuild the service")
    return described(**values)
