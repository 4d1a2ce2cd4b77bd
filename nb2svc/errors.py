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


class UsageError(Nb2svcError):
    """An option's value cannot be used (the same exit code as click's usage errors)."""

    exit_code = 2
    kind = "usage"


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


class PackageNotOnIndex(Nb2svcError):
    """A distribution the service needs is not on the package index at the pinned version."""

    exit_code = 9
    kind = "package_not_on_index"


class ServiceDirInvalid(Nb2svcError):
    """The directory given to ``serve`` is not a service directory."""

    exit_code = 10
    kind = "service_dir_invalid"


class LockConflict(Nb2svcError):
    """The requirements cannot be resolved together."""

    exit_code = 11
    kind = "lock_conflict"


class IndexUnreachable(Nb2svcError):
    """The package index could not be reached while locking."""

    exit_code = 12
    kind = "index_unreachable"


class VerifyMismatch(Nb2svcError):
    """The service's answers differ from the outputs recorded in the training kernel."""

    exit_code = 13
    kind = "verify_mismatch"


class VerifyEnvironmentFailed(Nb2svcError):
    """``verify`` could not create an environment from the lock (no such Python, a hash mismatch...)."""

    exit_code = 14
    kind = "verify_environment_failed"


class ServiceDidNotStart(Nb2svcError):
    """``verify`` started the service and it did not answer, or Ray Serve could not start its replicas."""

    exit_code = 15
    kind = "service_did_not_start"


class PythonNotFound(Nb2svcError):
    """No interpreter of the Python version asked for (``--python-version``) is installed."""

    exit_code = 16
    kind = "python_not_found"


class PackageUnavailable(Nb2svcError):
    """A package's training version has no distribution for the target Python."""

    exit_code = 17
    kind = "package_unavailable"


class ParityFailed(Nb2svcError):
    """Built for another Python, an example answers otherwise than in the training kernel."""

    exit_code = 18
    kind = "parity_failed"


class ContainerToolNotFound(Nb2svcError):
    """``nb2svc image`` found no container tool (podman, buildah, docker) on PATH."""

    exit_code = 19
    kind = "container_tool_not_found"


class WheelUnavailable(Nb2svcError):
    """A locked package has no wheel for the image's Python and platform, or the wheels could not be downloaded."""

    exit_code = 20
    kind = "wheel_unavailable"


class ImageBuildFailed(Nb2svcError):
    """The container tool failed to build the service's image."""

    exit_code = 21
    kind = "image_build_failed"
