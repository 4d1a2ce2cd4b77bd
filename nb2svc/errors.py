"""Every failure nb2svc reports, each with its own exit code.

Library code raises these; only the CLI prints them and exits. Each message
says what failed, where (cell, endpoint, variable, path) and what to do next.
"""

from __future__ import annotations

from typing import Any


class Nb2svcError(Exception):
    """Root of nb2svc's errors. ``exit_code`` is the CLI's exit status."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "exit_code": self.exit_code, "message": self.message, **self.details}


class NotebookInvalid(Nb2svcError):
    """The file is missing, not a notebook, or fails nbformat validation."""

    exit_code = 3
    kind = "notebook_invalid"


class NoEndpoint(Nb2svcError):
    """No cell tagged ``predict`` defines a public top-level function."""

    exit_code = 4
    kind = "no_endpoint"


class CellFailed(Nb2svcError):
    """A cell raised an exception while the notebook ran."""

    exit_code = 5
    kind = "cell_failed"


class KernelFailed(Nb2svcError):
    """The kernel could not start, died, or a cell ran past the timeout."""

    exit_code = 6
    kind = "kernel_failed"


class CaptureFailed(Nb2svcError):
    """An endpoint could not be serialized in the kernel."""

    exit_code = 7
    kind = "capture_failed"


class OutputExists(Nb2svcError):
    """The output directory exists and ``--force`` was not given."""

    exit_code = 8
    kind = "output_exists"


class ServiceDirInvalid(Nb2svcError):
    """The directory given to ``serve`` is not a service directory."""

    exit_code = 10
    kind = "service_dir_invalid"
