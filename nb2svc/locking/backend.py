"""The lock backend interface (pip-tools' ``repositories/base.py`` is the model), and what every resolver shares."""

from __future__ import annotations

import os
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from nb2svc.errors import Nb2svcError
from nb2svc.locking.options import LockOptions
from nb2svc.runtime.manifest import RequirementEntry

REQUIREMENTS_IN = "requirements.in"
REQUIREMENTS_TXT = "requirements.txt"


class LockBackend(ABC):
    """One way to turn requirements.in into the pinned lines of requirements.txt."""

    hashes: ClassVar[bool] = True  # every pin carries the hashes of its files
    cacheable: ClassVar[bool] = True  # the same requirements.in, tool, Python and index give the same pins
    header_notes: ClassVar[tuple[str, ...]] = ()  # comment lines for the top of requirements.txt

    @property
    @abstractmethod
    def tool(self) -> str:
        """Its name and version, as the manifest's ``lock.tool`` records it: ``uv pip compile 0.9.1``."""

    @abstractmethod
    def pin(self, requirements_in: str, requirements: tuple[RequirementEntry, ...]) -> str:
        """The pinned lines of requirements.txt, without a header; an ``Nb2svcError`` saying why it cannot."""


class ResolvingBackend(LockBackend):
    """A resolver run as a command on requirements.in, against the package index, for one Python."""

    def __init__(self, python_version: str, options: LockOptions) -> None:
        self.python_version = python_version
        self.options = options

    @abstractmethod
    def command(self) -> list[str]:
        """The command that reads ``requirements.in`` and writes ``requirements.txt`` (no header).

        It runs in the directory that holds both files.
        """

    @abstractmethod
    def failure(self, output: str, requirements_in: str, requirements: tuple[RequirementEntry, ...]) -> Nb2svcError:
        """The nb2svc error that the command's failure ``output`` (stderr, then stdout) stands for."""

    def environment(self) -> dict[str, str]:
        """The environment the command runs in."""
        return dict(os.environ)

    def pin(self, requirements_in: str, requirements: tuple[RequirementEntry, ...]) -> str:
        with tempfile.TemporaryDirectory(prefix="nb2svc-lock-") as work:
            (Path(work) / REQUIREMENTS_IN).write_text(requirements_in, encoding="utf-8")
            done = subprocess.run(self.command(), capture_output=True, text=True, cwd=work, env=self.environment())
            if done.returncode != 0:
                raise self.failure(done.stderr + done.stdout, requirements_in, requirements)
            return (Path(work) / REQUIREMENTS_TXT).read_text(encoding="utf-8")
