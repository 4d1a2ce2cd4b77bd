"""The registry of deployments: numbered versions of named services, and aliases that name a version.

Layout (one directory, ``NB2SVC_REGISTRY`` or the user's data directory)::

    <root>/<name>/<n>/             an ordinary service directory (what `nb2svc build` writes), n = 1, 2, 3...
    <root>/<name>/aliases.json     {"prod": 3}
    <root>/<name>/.lock            held while aliases are changed or a version removed

A version appears whole or not at all: it is written beside its final place, then renamed to the next free
number (a rename onto a number another publisher took just before fails, and the next number is tried), so
two publishers at the same moment get distinct numbers, and a publisher killed halfway leaves only a hidden
staging directory that nothing loads (the next publish of that name removes it). ``latest`` is the highest
number; an alias is a name for a number. A removed version's number is never given again (``.removed-<n>``
keeps it), so a URL with a number always meant one model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from nb2svc.errors import UsageError
from nb2svc.runtime.manifest import ManifestError, read_manifest
from nb2svc.runtime.verified import verification_of

NAME = re.compile(r"^[a-zA-Z0-9_]+$")
ENVIRONMENT = "NB2SVC_REGISTRY"
LATEST = "latest"
REGISTRY_PORT = 8765  # where a registry server listens unless told otherwise, and where nb2svc.deploy looks
_ALIASES = "aliases.json"
_STAGING = ".staging-"  # .staging-<random>: a version being written, locked (flock) by its publisher


def default_root() -> Path:
    """``NB2SVC_REGISTRY`` if set, else the user's data directory (``~/.local/share/nb2svc/registry`` on Linux)."""
    chosen = os.environ.get(ENVIRONMENT)
    return Path(chosen) if chosen else Path(platformdirs.user_data_dir("nb2svc")) / "registry"


def is_number(text: str) -> bool:
    """A version number as the registry writes it: ASCII digits, no leading zero (``²`` and ``01`` are not)."""
    return text.isascii() and text.isdigit() and str(int(text)) == text


def check_name(name: str, what: str = "deployment name") -> str:
    if not NAME.fullmatch(name):
        raise UsageError(f"{what} {name!r} must be letters, digits and underscores only (it is part of the URL)")
    return name


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    path: Path


class Registry:
    """Named deployments, each a sequence of numbered versions, under ``root``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def publish(self, name: str, write: Callable[[Path], None]) -> Version:
        """The next version of ``name``: ``write(directory)`` fills a new directory, which then becomes
        version n+1 at once. If ``write`` raises, nothing is published (nor is a new deployment's folder left)."""
        folder = self.root / check_name(name)
        new = not folder.exists()
        staging, held = self._staging(folder)
        published = False
        try:
            write(staging)
            staging.chmod(0o755)  # mkdtemp made it private
            with self._locked(name):  # the number is chosen and taken at once: never one remove() just retired
                number = self._highest(name) + 1
                staging.rename(folder / str(number))
            published = True
            return Version(name, number, folder / str(number))
        finally:
            os.close(held)  # its lock goes with it
            if not published:
                shutil.rmtree(staging, ignore_errors=True)
                if new:
                    with contextlib.suppress(OSError):  # not empty: another publisher's version is there
                        folder.rmdir()

    @staticmethod
    def _staging(folder: Path) -> tuple[Path, int]:
        """A new hidden directory in ``folder`` (made if need be, again if a failed publisher just removed it),
        and a descriptor holding an exclusive lock on it while it is written: what is not locked was left by a
        publisher that was killed, and is removed first."""
        for attempt in range(3):
            folder.mkdir(parents=True, exist_ok=True)
            _remove_abandoned(folder)
            try:
                made = Path(tempfile.mkdtemp(prefix=".new-", dir=folder))  # not swept: locked before it is named so
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            held = os.open(made, os.O_RDONLY)
            fcntl.flock(held, fcntl.LOCK_EX)
            staging = made.with_name(_STAGING + made.name.removeprefix(".new-"))
            made.rename(staging)
            return staging, held
        raise AssertionError("unreachable")

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))

    def numbers(self, name: str) -> list[int]:
        """The versions of ``name``, oldest first."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if is_number(p.name) and p.is_dir())

    def _highest(self, name: str) -> int:
        """The highest number ever given to ``name``, removed ones included: a number is never reused."""
        folder = self.root / name
        removed = [int(p.name.removeprefix(".removed-")) for p in folder.glob(".removed-*") if p.is_file()]
        # (a marker's name was written by remove(): always a number)
        return max([*self.numbers(name), *removed], default=0)

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version number}``; UsageError naming the file if it is not that (edited by hand?)."""
        path = self.root / name / _ALIASES
        if not path.is_file():
            return {}
        try:
            aliases = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UsageError(
                f"{path} is not JSON ({exc}): remove it, then set the aliases again (nb2svc alias)"
            ) from None
        if not isinstance(aliases, dict) or not all(
            isinstance(alias, str) and type(number) is int for alias, number in aliases.items()
        ):
            raise UsageError(
                f"{path} is not {{alias: version number}}: remove it, then set the aliases again (nb2svc alias)"
            )
        return aliases

    def set_alias(self, name: str, alias: str, number: int) -> None:
        """Point ``alias`` at version ``number`` of ``name`` (moving it if it pointed elsewhere)."""
        check_name(alias, "alias")
        if alias.isdigit() or alias == LATEST:
            raise UsageError(f"alias {alias!r} would hide a version: use a name that is not a number or 'latest'")
        with self._locked(name):
            if number not in self.numbers(name):
                raise UsageError(f"{name} has no version {number} (it has {self.numbers(name) or 'none'})")
            self._write_aliases(name, {**self.aliases(name), alias: number})

    def remove_alias(self, name: str, alias: str) -> None:
        with self._locked(name):
            aliases = self.aliases(name)
            if alias not in aliases:
                raise UsageError(f"{name} has no alias {alias!r}")
            del aliases[alias]
            self._write_aliases(name, aliases)

    def remove(self, name: str, number: int) -> None:
        """Remove version ``number``; refused while an alias points at it."""
        with self._locked(name):
            pointing = sorted(alias for alias, target in self.aliases(name).items() if target == number)
            if pointing:
                raise UsageError(
                    f"version {number} of {name} is what {', '.join(pointing)} points at: move or remove "
                    f"{'that alias' if len(pointing) == 1 else 'those aliases'} first (nb2svc alias)"
                )
            path = self.root / name / str(number)
            if not path.is_dir():
                raise UsageError(f"{name} has no version {number}")
            (path.parent / f".removed-{number}").touch()  # its number is never given again
            doomed = path.with_name(f".removing-{number}-{os.getpid()}")
            path.rename(doomed)  # gone at once for every reader; deleted after
            shutil.rmtree(doomed)

    def describe(self) -> list[dict[str, Any]]:
        """Every deployment with its versions (when built, from which notebook, on which Python) and aliases."""
        return [
            {
                "name": name,
                "aliases": self.aliases(name),
                "versions": [self._version_facts(name, number) for number in self.numbers(name)],
            }
            for name in self.names()
        ]

    def _version_facts(self, name: str, number: int) -> dict[str, Any]:
        path = self.root / name / str(number)
        facts: dict[str, Any] = {"version": number, "path": str(path)}
        try:
            manifest = read_manifest(path)
        except ManifestError as exc:  # listed all the same, with why it cannot be served
            return {**facts, "error": str(exc)}
        return {
            **facts,
            "built_at": manifest.built_at,
            "notebook": manifest.notebook.file,
            "python": manifest.python.version,
            "source": manifest.source,
            "endpoints": [endpoint.name for endpoint in manifest.endpoints],
            "model_version": manifest.version,
            "verified": verification_of(path, manifest.version),
        }

    def _write_aliases(self, name: str, aliases: dict[str, int]) -> None:
        path = self.root / name / _ALIASES
        temporary = path.with_name(f".{_ALIASES}.{os.getpid()}")
        temporary.write_text(json.dumps(dict(sorted(aliases.items())), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        folder = self.root / check_name(name)
        if not folder.is_dir():  # never made here: only a published version makes a deployment
            raise UsageError(f"there is no deployment {name!r} in {self.root}")
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_abandoned(folder: Path) -> None:
    """Remove the staging directories no publisher holds any more (one was killed halfway through a deploy).
    A lock, not a process id: a publisher in another PID namespace (a container sharing the registry) holds its
    own, and the kernel lets a lock go when its holder dies."""
    for staging in folder.glob(f"{_STAGING}*"):
        try:
            held = os.open(staging, os.O_RDONLY)
        except OSError:  # gone already (published, or removed by another sweeper)
            continue
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # being written
            continue
        finally:
            os.close(held)
        shutil.rmtree(staging, ignore_errors=True)
