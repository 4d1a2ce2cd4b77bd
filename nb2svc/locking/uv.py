"""``uv pip compile --generate-hashes``: pip-compile's output, for any Python, in a fraction of its time."""

from __future__ import annotations

import re
from importlib.metadata import version

from uv import find_uv_bin

from nb2svc.errors import Nb2svcError
from nb2svc.locking.backend import REQUIREMENTS_IN, REQUIREMENTS_TXT, ResolvingBackend
from nb2svc.locking.failures import Demand, conflict, index_unreachable, lock_failed, not_on_index
from nb2svc.runtime.manifest import RequirementEntry

# As pip-compile is run: one retry, 20 s per request (the user's environment may say otherwise).
_NETWORK_DEFAULTS = {"UV_HTTP_RETRIES": "1", "UV_HTTP_TIMEOUT": "20"}
_UNREACHABLE = re.compile(
    r"error sending request|dns error|failed to lookup address|tcp connect error|Connection refused|timed out"
)
_NOT_FOUND = re.compile(
    r"Because ([A-Za-z0-9][A-Za-z0-9._-]*)\S* was not found in the (?:package registry|provided package locations)"
    r"|there is no version of ([A-Za-z0-9][A-Za-z0-9._-]*)"
)
_NO_SOLUTION = "No solution found when resolving dependencies"
# A requirement as uv writes it in an explanation, once its markers (in braces) are gone: name, extras, versions.
_SPEC = r"(?<![\w.-])[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?(?:[<>=!~]=?[\w.*+!]+(?:,[<>=!~]=?[\w.*+!]+)*)?"
_DEPENDS_ON = re.compile(rf"({_SPEC}) depends on ({_SPEC})")
_YOU_REQUIRE = re.compile(rf"you require ({_SPEC}(?: and {_SPEC})*)")
_MARKERS = re.compile(r"\{[^}]*\}")


class UvBackend(ResolvingBackend):
    @property
    def tool(self) -> str:
        return f"uv pip compile {version('uv')}"

    def command(self) -> list[str]:
        return [
            find_uv_bin(), "pip", "compile", "--quiet", "--color", "never", "--generate-hashes", "--no-header",
            "--python-version", self.python_version, *self.options.index_arguments(),
            "--output-file", REQUIREMENTS_TXT, REQUIREMENTS_IN,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {**_NETWORK_DEFAULTS, **super().environment()}

    def failure(self, output: str, requirements_in: str, requirements: tuple[RequirementEntry, ...]) -> Nb2svcError:
        if _UNREACHABLE.search(output):
            return index_unreachable(self.options, _unreachable_detail(output))
        missing = _NOT_FOUND.search(output)
        if missing:
            return not_on_index(next(name for name in missing.groups() if name), requirements, self.options)
        if _NO_SOLUTION in output:
            return conflict([], conflict_demands(output), requirements, output)
        return lock_failed(output)


def conflict_demands(output: str) -> tuple[Demand, ...]:
    """Who asks for what, read from uv's explanation of a conflict, in its order.

    "Because pandas>=3.1.1 depends on numpy>=2.0.2 and you require numpy==1.21.0, ..." gives
    ``numpy>=2.0.2`` required by ``pandas>=3.1.1``, and ``numpy==1.21.0`` from requirements.in.
    The one place that reads uv's wording, so that a change of uv's shows up as this function's test failing.
    """
    text = _MARKERS.sub("", " ".join(output.split()))
    found: list[tuple[int, Demand]] = [
        (match.start(), Demand(match.group(2), match.group(1))) for match in _DEPENDS_ON.finditer(text)
    ]
    for match in _YOU_REQUIRE.finditer(text):
        found += [(match.start(), Demand(spec, None)) for spec in match.group(1).split(" and ")]
    return tuple(dict.fromkeys(demand for _, demand in sorted(found, key=lambda item: item[0])))


def _unreachable_detail(output: str) -> str:
    """The URL uv failed to fetch and its last cause: "Failed to fetch: URL: Connection refused (os error 111)"."""
    causes = [
        line.strip().removeprefix("error: ").removeprefix("cause: ") for line in output.splitlines() if line.strip()
    ]
    fetched = [cause for cause in causes if cause.startswith("Failed to fetch")]
    return ": ".join(dict.fromkeys(fetched[:1] + causes[-1:]))
