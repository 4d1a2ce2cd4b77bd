"""What a notebook writes on its functions. Importing it costs nothing: only the standard library.

The served directory never needs nb2svc: a decorator here only sets an attribute on the function
itself, which cloudpickle keeps with it, and which the runtime reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from nb2svc.runtime.manifest import BatchDescription
from nb2svc.runtime.schema import BATCH_ATTRIBUTE, batch_problem

F = TypeVar("F", bound=Callable[..., Any])
_DEFAULT = BatchDescription()


@overload
def batch(function: F) -> F: ...


@overload
def batch(*, max_batch_size: int = ..., max_wait_ms: float = ...) -> Callable[[F], F]: ...


def batch(
    function: F | None = None,
    *,
    max_batch_size: int = _DEFAULT.max_batch_size,
    max_wait_ms: float = _DEFAULT.max_wait_ms,
) -> F | Callable[[F], F]:
    """Mark ``function`` as batchable: it takes a list of inputs and returns a list of as many results
    (or takes a DataFrame and returns one result per row).

    ``@nb2svc.batch`` or ``@nb2svc.batch(max_batch_size=128, max_wait_ms=0)``. The service calls it once for
    a whole batch request, and gathers concurrent requests into one call of at most ``max_batch_size``
    inputs as soon as the previous call ends; ``max_wait_ms`` above 0 holds a call that long for more
    inputs to arrive. In the notebook the function is called as it is: the decorator returns it unchanged.
    """

    def mark(marked: F) -> F:
        before = getattr(marked, BATCH_ATTRIBUTE, None)
        setattr(marked, BATCH_ATTRIBUTE, {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms})
        problem = batch_problem(marked)
        if problem is not None:  # the function stays as it was
            setattr(marked, BATCH_ATTRIBUTE, before)
            raise TypeError(f"nb2svc.batch: {problem}")
        return marked

    return mark if function is None else mark(function)
