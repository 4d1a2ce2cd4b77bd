"""Stage 4: lock the requirements completely, with hashes (pip-compile), or offline from what is installed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from nb2svc.fresh_python import run_in_fresh_python
from nb2svc.errors import IndexUnreachable, LockConflict, PackageNotOnIndex
from nb2svc.requirements import Requirement, format_requirements_in

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)
_UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Name or service not known|"
    r"Temporary failure in name resolution|ConnectTimeoutError|Read timed out|Connection refused|"
    r"Could not fetch URL|error sending request|dns error|tcp connect error"
)
_NOT_FOUND = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the requirement) "
    r"([A-Za-z0-9][A-Za-z0-9._-]*)"
    r"|Because ([A-Za-z0-9][A-Za-z0-9._-]*)(?:==\S+)? was not found in the package registry"
    r"|there is no version of ([A-Za-z0-9][A-Za-z0-9._-]*)"
)


@dataclass(frozen=True)
class LockOptions:
    """How to lock: the index to resolve against, the target Python, or no resolver at all."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    python_version: str | None = None
    offline: bool = False
    cache_dir: Path | None = None

    def index_lines(self) -> list[str]:
        lines = [f"--index-url {self.index_url}"] if self.index_url else []
        return lines + [f"--extra-index-url {url}" for url in self.extra_index_urls]


@dataclass(frozen=True)
class Lock:
    requirements_in: str
    requirements_txt: str
    pins: dict[str, str]
    python_version: str
    tool: str
    hashes: bool
    cached: bool
    seconds: float
    options: LockOptions = field(default_factory=LockOptions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "python_version": self.python_version,
            "hashes": self.hashes,
            "offline": self.options.offline,
            "index_url": self.options.index_url,
            "extra_index_urls": list(self.options.extra_index_urls),
            "pins": self.pins,
        }


def lock_requirements(
    requirements: tuple[Requirement, ...], python_version: str, options: LockOptions, python_executable: str
) -> Lock:
    """Lock ``requirements`` for Python ``python_version`` (X.Y).

    With ``options.offline`` the transitive closure is pinned from the metadata installed for
    ``python_executable`` (the kernel's Python), without a resolver and without hashes.
    """
    started = time.perf_counter()
    requirements_in = format_requirements_in(requirements)
    if options.offline:
        text, tool = _offline_lock(requirements, python_executable), "installed metadata (offline)"
        cached = False
    else:
        tool = _resolver_name(python_version)
        key = _cache_key(requirements_in, python_version, options, tool)
        cache = (options.cache_dir or default_cache_dir()) / f"{key}.txt"
        cached = cache.is_file()
        if cached:
            text = cache.read_text(encoding="utf-8")
        else:
            text = _compile(requirements_in, requirements, python_version, options)
            cache.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(cache, text)
    header = _header(tool, python_version, options)
    return Lock(
        requirements_in=requirements_in,
        requirements_txt=header + text,
        pins={canonicalize_name(name): pinned for name, pinned in _PIN.findall(text)},
        python_version=python_version,
        tool=tool,
        hashes=not options.offline,
        cached=cached,
        seconds=time.perf_counter() - started,
        options=options,
    )


def default_cache_dir() -> Path:
    if "NB2SVC_CACHE_DIR" in os.environ:
        return Path(os.environ["NB2SVC_CACHE_DIR"]) / "locks"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nb2svc" / "locks"


def _resolver_name(python_version: str) -> str:
    if python_version == _builder_python():
        return f"pip-compile {version('pip-tools')}"
    return f"uv pip compile {version('uv')}"  # pip-compile resolves only for the Python it runs under


def _builder_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _cache_key(requirements_in: str, python_version: str, options: LockOptions, tool: str) -> str:
    material = json.dumps([requirements_in, python_version, options.index_lines(), tool, sys.platform])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _compile(
    requirements_in: str, requirements: tuple[Requirement, ...], python_version: str, options: LockOptions
) -> str:
    with tempfile.TemporaryDirectory(prefix="nb2svc-lock-") as work:
        source, output = Path(work) / "requirements.in", Path(work) / "requirements.txt"
        source.write_text(requirements_in, encoding="utf-8")
        done = subprocess.run(
            _compile_command(source, output, python_version, options), capture_output=True, text=True, cwd=work
        )
        if done.returncode != 0:
            raise _lock_failed(done.stderr + done.stdout, requirements_in, requirements, options)
        return _without_comment_header(output.read_text(encoding="utf-8"))


def _compile_command(source: Path, output: Path, python_version: str, options: LockOptions) -> list[str]:
    index = [arg for line in options.index_lines() for arg in line.split(" ", 1)]
    if python_version == _builder_python():
        return [
            sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes", "--allow-unsafe",
            "--strip-extras", "--no-header", "--no-emit-index-url", "--no-emit-find-links",
            "--no-emit-trusted-host", "--pip-args", "--retries 1 --timeout 20",
            *index, "--output-file", str(output), str(source),
        ]  # fmt: skip
    from uv import find_uv_bin

    return [
        find_uv_bin(), "pip", "compile", "--quiet", "--generate-hashes", "--no-header", "--python-version",
        python_version, "--no-emit-index-url", *index, "--output-file", str(output), str(source),
    ]  # fmt: skip


def _lock_failed(
    output: str, requirements_in: str, requirements: tuple[Requirement, ...], options: LockOptions
) -> Exception:
    where = options.index_url or "the package index"
    if _UNREACHABLE.search(output):
        return IndexUnreachable(
            f"could not reach {where} to lock the requirements:\n  {_last_lines(output, _UNREACHABLE)}\n"
            "Check the network or --index-url, or lock without a resolver: --offline (no hashes).",
            index_url=options.index_url,
        )
    missing = _NOT_FOUND.search(output)
    if missing:
        name = next(group for group in missing.groups() if group)
        return _not_on_index(name, requirements, where)
    if "ResolutionImpossible" in output or "conflict" in output.lower() or "unsatisfiable" in output.lower():
        explanation = _conflict_lines(output, requirements_in, requirements)
        return LockConflict(
            f"the requirements cannot be installed together:\n{explanation}\n"
            "Change or drop the --python-package that asks for a different version, or align the notebook's "
            "packages and rebuild.",
            conflict=explanation.splitlines(),
        )
    return LockConflict(f"locking the requirements failed:\n{output.strip()[-3000:]}")


def _not_on_index(name: str, requirements: tuple[Requirement, ...], where: str) -> PackageNotOnIndex:
    requirement = next(
        (r for r in requirements if canonicalize_name(r.name) == canonicalize_name(name)), None
    )
    spec = requirement.spec if requirement else name
    why = "; ".join(requirement.reasons) if requirement else "a dependency of the requirements"
    return PackageNotOnIndex(
        f"{spec} is not on {where} ({why}). It may be installed from a local path, in editable mode, "
        "or from a private index. Ways out: --python-package 'NAME @ URL' (a wheel or VCS URL pip can fetch), "
        "--extra-index-url URL for a private index, or --offline to pin what is installed (no hashes).",
        distribution=requirement.name if requirement else name,
        reasons=list(requirement.reasons) if requirement else [],
    )


def _conflict_lines(output: str, requirements_in: str, requirements: tuple[Requirement, ...]) -> str:
    """pip's account of a conflict, without its traceback: who asks for what."""
    lines_in = requirements_in.splitlines()

    def spec_on_line(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return lines_in[number - 1].strip() if 0 < number <= len(lines_in) else match.group(0)

    said = [
        re.sub(r"-r \S*requirements\.in \(line (\d+)\)", spec_on_line, line.strip().removeprefix("ERROR: "))
        for line in output.splitlines()
        if "Cannot install" in line or " depends on " in line or "The user requested" in line
    ]
    reasons = {requirement.spec: "; ".join(requirement.reasons) for requirement in requirements}
    said += [
        f"{spec} (required by {_candidate(parent)})" if parent else f"{spec} ({reasons.get(spec, 'requirements.in')})"
        for spec, parent in _REQUIREMENT_INFORMATION.findall(output)
    ]
    return "\n".join(f"  {line}" for line in dict.fromkeys(said or output.strip().splitlines()[-5:]))


_REQUIREMENT_INFORMATION = re.compile(
    r"RequirementInformation\(requirement=\w+Requirement\('([^']+)'\), parent=(?:None|\w+Candidate\('([^']*)')"
)


def _candidate(link: str) -> str:
    """``scikit-learn 1.9.1`` from the URL of its wheel or sdist."""
    filename = link.split()[0].split("#")[0].rstrip("/").rsplit("/", 1)[-1] if link.strip() else link
    match = re.match(r"([A-Za-z0-9_.]+?)-(\d[^-]*?)(?:-|\.tar\.gz|\.zip)", filename)
    return f"{match.group(1).replace('_', '-')} {match.group(2)}" if match else filename


def _last_lines(output: str, pattern: re.Pattern[str]) -> str:
    matching = [line.strip() for line in output.splitlines() if pattern.search(line)]
    return (matching[-1] if matching else output.strip().splitlines()[-1])[:300]


def _offline_lock(requirements: tuple[Requirement, ...], python_executable: str) -> str:
    request: dict[str, Any] = {"task": "closure", "names": [r.name for r in requirements]}
    pins: dict[str, str] = {}
    for python in (python_executable, sys.executable):  # the kernel's environment, then the builder's
        found = run_in_fresh_python(python, request, "reading the installed metadata")
        pins.update({name: pinned for name, pinned in found["pins"].items() if name not in pins})
        request["names"] = found["missing"]
        if not found["missing"]:
            break
    if request["names"]:
        raise PackageNotOnIndex(
            f"--offline pins what is installed, and {', '.join(request['names'])} is not installed in the "
            "kernel's environment. Install it there, or lock with the resolver (without --offline).",
            distributions=request["names"],
        )
    return "".join(f"{name}=={pins[name]}\n" for name in sorted(pins, key=canonicalize_name))


def _header(tool: str, python_version: str, options: LockOptions) -> str:
    lines = [f"# Locked by nb2svc with {tool} for Python {python_version}."]
    if options.offline:
        lines.append("# OFFLINE LOCK: pinned from the installed metadata without a resolver; NO HASHES.")
    return "\n".join(lines + options.index_lines()) + "\n"


def _without_comment_header(text: str) -> str:
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "".join(lines)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
