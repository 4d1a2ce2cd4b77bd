"""Every way a request can fail, each carrying its HTTP status and its error ``type``.

Raised anywhere on the call path (reading, validating, executing, encoding) and
answered in one place (``calls.service_error``), in the format of the protocol the
request came by. Standard library only: the training kernel uses these too.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Root of the runtime's request errors: ``status`` is the HTTP status, ``type`` the error body's type."""

    status = 500
    type = "error"

    def __init__(self, message: str, *, parameter: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter  # the parameter at fault, where there is one
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The error as it appears in a response or a batch row: type, message and the parameter at fault."""
        found: dict[str, Any] = {"type": self.type, "message": self.message}
        return found | ({"parameter": self.parameter} if self.parameter else {})


class BadRequest(ServiceError):
    """The body is not a request: not JSON, not standard JSON, or not the protocol's shape."""

    status = 400
    type = "bad_request"


class NotFound(ServiceError):
    status = 404
    type = "not_found"


class RoutingError(ServiceError):
    """What the router found: no such route (404), or not with this method (405, with its Allow header)."""

    def __init__(self, status: int, message: str, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        self.type = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")


class ClientClosed(ServiceError):
    """The client closed the connection before its answer was made: nobody reads it (nginx's 499)."""

    status = 499
    type = "client_closed"


class BodyTimedOut(ServiceError):
    """The body did not arrive within the time limit (a client that sent its headers and stalled)."""

    status = 408
    type = "request_timeout"


class TooLarge(ServiceError):
    """The body, or the batch, is over its limit."""

    status = 413
    type = "too_large"


class BindingError(ServiceError):
    """The values do not fit the function's parameters; ``parameter`` names the one at fault."""

    status = 422
    type = "validation_error"

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message, parameter=parameter)


class Busy(ServiceError):
    """Every prediction slot is taken."""

    status = 429
    type = "busy"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class CallFailed(ServiceError):
    """The function raised: the error's type is the exception's class name."""

    status = 500

    def __init__(self, error: BaseException, endpoint: str = "") -> None:
        super().__init__(str(error))
        self.error = error
        self.type = type(error).__name__
        self.endpoint = endpoint

    def with_endpoint(self, endpoint: str) -> CallFailed:
        """The same failure, its message saying which function raised (for a whole request, not a batch row)."""
        failed = CallFailed(self.error, endpoint)
        failed.message = f"{endpoint} raised: {self.error}"
        return failed


class Unencodable(ServiceError):
    """The function's result has a type JSON cannot hold."""

    status = 500
    type = "unencodable_result"


class NotReady(ServiceError):
    """The service cannot be trusted to answer; ``kind`` says what went wrong (see ``load.NotReadyKind``)."""

    status = 503
    type = "not_ready"

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return super().body() | {"kind": self.kind}


class TimedOut(ServiceError):
    """The call ran past the time limit."""

    status = 504
    type = "timeout"
