"""Taking turns: a long call of many rows lets the calls waiting behind it run between its rows.

A call's code calls ``between_rows()`` after each row of a batch. On a worker of the service's
``CallExecutor``, that hands the worker's turn to the calls waiting, if any and if this turn has lasted
long enough; elsewhere (the training kernel, a replayed example) it does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_local = threading.local()


def between_rows() -> None:
    """Let waiting calls run now, if this thread's executor says it is their turn."""
    turn: Callable[[], None] | None = getattr(_local, "turn", None)
    if turn is not None:
        turn()


def take_turns(turn: Callable[[], None]) -> None:
    """Make ``turn`` what ``between_rows`` calls on this thread."""
    _local.turn = turn
