"""pip-tools' ``pip-compile --generate-hashes``: resolves with pip, for the Python it runs under only."""

from __future__ import annotations

import re
import sys
from importlib.metadata import version

from nb2svc.errors import Nb2svcError, UsageError
from nb2svc.locking.backend import REQUIREMENTS_IN, REQUIREMENTS_TXT, ResolvingBackend
from nb2svc.locking.failures import Demand, conflict, index_unreachable, lock_failed, not_on_index
from nb2svc.locking.options import LockOptions
from nb2svc.runtime.manifest import RequirementEntry

_UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Name or service not known|"
    r"Temporary failure in name resolution|ConnectTimeoutError|Read timed out|Connection refused|Could not fetch URL"
)
_NOT_FOUND = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the requirement) "
    r"([A-Za-z0-9][A-Za-z0-9._-]*)"
)
_LINE_OF_REQUIREMENTS_IN = re.compile(rf"-r \S*{re.escape(REQUIREMENTS_IN)} \(line (\d+)\)")
_REQUIREMENT_INFORMATION = re.compile(
    r"RequirementInformation\(requirement=\w+Requirement\('([^']+)'\), parent=(?:None|\w+Candidate\('([^']*)')"
)


class PipCompileBackend(ResolvingBackend):
    def __init__(self, python_version: str, options: LockOptions) -> None:
        if python_version != _builder_python():
            raise UsageError(
                f"--resolver pip-compile locks only for the Python it runs under ({_builder_python()}), and the "
                f"service needs Python {python_version}. Lock with --resolver uv (the default), which locks for "
                f"any Python, or run nb2svc under Python {python_version}."
            )
        super().__init__(python_version, options)

    @property
    def tool(self) -> str:
        return f"pip-compile {version('pip-tools')}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes", "--allow-unsafe",
            "--strip-extras", "--no-header", "--no-emit-index-url", "--no-emit-find-links",
            "--no-emit-trusted-host", "--pip-args", "--retries 1 --timeout 20",
            *self.options.index_arguments(), "--output-file", REQUIREMENTS_TXT, REQUIREMENTS_IN,
        ]  # fmt: skip

    def failure(self, output: str, requirements_in: str, requirements: tuple[RequirementEntry, ...]) -> Nb2svcError:
        if _UNREACHABLE.search(output):
            return index_unreachable(self.options, _last_line_matching(output, _UNREACHABLE))
        missing = _NOT_FOUND.search(output)
        if missing:
            return not_on_index(missing.group(1), requirements, self.options)
        if "ResolutionImpossible" in output:
            return conflict(_cannot_install(output, requirements_in), resolver_report(output), requirements, output)
        return lock_failed(output)


def _builder_python() -> str:
    """X.Y of the Python nb2svc runs under: the only one pip-compile resolves for."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def resolver_report(output: str) -> tuple[Demand, ...]:
    """Who asks for what, read from the ``ResolutionImpossible`` pip raised (its traceback is in ``output``).

    pip says it only in the repr of its internal ``RequirementInformation``: the one place that reads it,
    so that a change of pip's shows up as this function's test failing, not as a vague message.
    """
    return tuple(
        Demand(spec, _candidate(link) if link else None) for spec, link in _REQUIREMENT_INFORMATION.findall(output)
    )


def _candidate(link: str) -> str:
    """``scikit-learn 1.9.1`` from the URL of its wheel or sdist (and what pip appends to it)."""
    filename = link.split()[0].split("#")[0].rstrip("/").rsplit("/", 1)[-1] if link.strip() else link
    match = re.match(r"([A-Za-z0-9_.]+?)-(\d[^-]*?)(?:-|\.tar\.gz|\.zip)", filename)
    return f"{match.group(1).replace('_', '-')} {match.group(2)}" if match else filename


def _cannot_install(output: str, requirements_in: str) -> list[str]:
    """pip's summary lines ("Cannot install pandas==3.1.1 and numpy==1.21.0 because...").

    Also the lines of requirements.in that they name.
    """
    lines_in = requirements_in.splitlines()

    def spec_on_line(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return lines_in[number - 1].strip() if 0 < number <= len(lines_in) else match.group(0)

    return [
        _LINE_OF_REQUIREMENTS_IN.sub(spec_on_line, line.strip().removeprefix("ERROR: "))
        for line in output.splitlines()
        if "Cannot install" in line or " depends on " in line or "The user requested" in line
    ]


def _last_line_matching(output: str, pattern: re.Pattern[str]) -> str:
    return [line.strip() for line in output.splitlines() if pattern.search(line)][-1]
