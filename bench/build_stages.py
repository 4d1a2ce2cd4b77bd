"""Where a build's (or a plain nbconvert run's) time goes: run it in this process with timers around its stages.

    python bench/build_stages.py OUT.json nb2svc build NOTEBOOK ...   # the CLI, as `nb2svc build ...`
    python bench/build_stages.py OUT.json nbconvert --to notebook --execute NOTEBOOK ...

Run by bench/build_times.py with the interpreter each command runs under (the project's .venv for nb2svc,
the nbconvert virtualenv for nbconvert). It wraps, without changing them, the functions each stage is:
nbclient's (kernel start, the connection until the kernel answers, each cell, the shutdown: nbconvert's
ExecutePreprocessor is a NotebookClient, so both are timed by the same wrappers) and, for nb2svc, the
pipeline's stages as `nb2svc.pipeline` names them. A name this nb2svc does not have is left out, not an
error. Writes ``{"events": [[label, seconds], ...], "imports": {what: seconds}, "import_seconds", "run_seconds",
"exit_code"}`` to OUT.json;
the caller adds the interpreter's start and exit (the subprocess's wall time less what is measured here).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any import: what follows is this process's own time

import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

EVENTS: list[tuple[str, float]] = []
_PHASE: list[str] = []  # what nb2svc is doing in the kernel when a cell runs: its own calls are not the notebook's


def _record(label: str | None, seconds: float) -> None:
    if label is not None:  # None: not worth a line (a markdown cell, which nbclient passes over)
        EVENTS.append((label, seconds))


def _wrap(owner: Any, name: str, label: Callable[..., str | None] | str) -> None:
    """Time every call of ``owner.name`` (a function, coroutine function or context manager) as ``label``."""
    original = getattr(owner, name, None)
    if original is None:
        return

    def label_of(*args: Any, **kwargs: Any) -> str | None:
        return label(*args, **kwargs) if callable(label) else label

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                _record(label_of(*args, **kwargs), time.perf_counter() - started)

        setattr(owner, name, timed_async)
    else:

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _record(label_of(*args, **kwargs), time.perf_counter() - started)

        setattr(owner, name, timed)


def _cell_label(client: Any, cell: Any, *args: Any, **kwargs: Any) -> str | None:
    if _PHASE:
        return f"nb2svc in the kernel: {_PHASE[-1]}"
    if cell.cell_type != "code":
        return None
    first = next((line for line in cell.source.splitlines() if line.strip()), "")[:40]
    return f"cell: {first}"  # by its source, not its position: nbconvert's notebook has markdown cells too


def _nbclient() -> None:
    from nbclient import NotebookClient

    # nbconvert calls the coroutines; nb2svc the synchronous names, which nbclient made of the coroutines
    # themselves (run_sync at class definition), so each call is timed once
    for sync, coroutine, label in (
        ("start_new_kernel", "async_start_new_kernel", "kernel: start the process"),
        ("start_new_kernel_client", "async_start_new_kernel_client", "kernel: connect and wait until it answers"),
        ("execute_cell", "async_execute_cell", _cell_label),
        ("_cleanup_kernel", "_async_cleanup_kernel", "kernel: shut down"),
    ):
        _wrap(NotebookClient, sync, label)
        _wrap(NotebookClient, coroutine, label)


def _nb2svc() -> None:
    from nb2svc import execute, pipeline as pipeline_module

    pipeline: Any = pipeline_module  # its stages are replaced by timed ones below: names, not types, matter here

    def in_phase(owner: Any, name: str, phase: Callable[..., str] | str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def phased(*args: Any, **kwargs: Any) -> Any:
            _PHASE.append(phase(*args, **kwargs) if callable(phase) else phase)
            try:
                return original(*args, **kwargs)
            finally:
                _PHASE.pop()

        setattr(owner, name, phased)

    kernel = getattr(execute, "Kernel", None)
    if kernel is not None:
        in_phase(kernel, "__init__", "send its kernel-side code")
        in_phase(kernel, "call", lambda self, function, **_: f"{function.__name__}()")
    stages = {
        "read_notebook": "read the notebook",
        "copy_runtime": "copy the runtime",
        "capture_endpoints": "capture (in the kernel)",
        "observe_requirements": "observe (a fresh interpreter)",
        "gather_requirements": "gather requirements",
        "lock_requirements": "lock",
        "render_service": "render",
        "publish": "publish (rename into place)",
        "build_key": "the build cache: the key (the kernel's environment, nb2svc's code)",
        "_reuse": "the build cache: the cached service copied into place",
    }
    for name, label in stages.items():
        _wrap(pipeline, name, label)
    try:
        from nb2svc.build_cache import BuildCache
    except ImportError:  # an nb2svc without a build cache
        pass
    else:
        _wrap(BuildCache, "find", "the build cache: look up")
        _wrap(BuildCache, "store", "the build cache: keep this build (a copy)")
    _wrap(pipeline, "build", "nb2svc.build (all of it)")
    # the kernel's shutdown happens when execute_notebook's block exits: nbclient's cleanup is timed above
    original = getattr(pipeline, "execute_notebook", None)
    if original is not None:

        @contextmanager
        def timed_execution(*args: Any, **kwargs: Any) -> Iterator[Any]:
            started = time.perf_counter()
            with original(*args, **kwargs) as executed:
                _record("execute: kernel start to last cell (all of it)", time.perf_counter() - started)
                yield executed
                exiting = time.perf_counter()
            _record("execute: leaving (the kernel's shutdown)", time.perf_counter() - exiting)

        pipeline.execute_notebook = timed_execution


def _experiments(names: list[str]) -> None:
    """Changes tried without editing nb2svc (BENCH_STAGES_TRY, comma-separated), to measure what they would save.

    immediate-shutdown: nbclient's ``shutdown_kernel="immediate"`` (the kernel is killed, not asked to exit
    and waited for; nbclient keeps its IPython history in memory, so nothing is lost).
    observe-during-shutdown: the observation's fresh interpreter started as soon as the capture has written the
    artifacts (``observe.start_observing``), so that it runs while the kernel shuts down; the pipeline's call of
    ``observe_requirements`` then only waits for its result.
    """
    from nbclient import NotebookClient

    if "observe-during-shutdown" in names:
        from nb2svc import observe, pipeline as pipeline_module

        pipeline: Any = pipeline_module

        started: dict[int, Any] = {}  # id(capture) -> its observation
        capture_endpoints, observe_requirements = pipeline.capture_endpoints, pipeline.observe_requirements

        def capture_then_observe(executed: Any, staging: Any, *args: Any, **kwargs: Any) -> Any:
            capture = capture_endpoints(executed, staging, *args, **kwargs)
            started[id(capture)] = observe.start_observing(capture, staging)
            return capture

        def observed(capture: Any, staging: Any) -> Any:
            observation = started.pop(id(capture), None)
            if observation is None:
                return observe_requirements(capture, staging)
            with observation:
                return observation.result()

        pipeline.capture_endpoints = capture_then_observe
        pipeline.observe_requirements = observed

    if "immediate-shutdown" in names:
        original = NotebookClient.__init__

        @functools.wraps(original)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.shutdown_kernel = "immediate"

        NotebookClient.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    output, program, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
    code: Any = 0
    imports: dict[str, float] = {}
    if program == "nb2svc":
        from nb2svc import cli

        imports["import nb2svc.cli"] = time.perf_counter() - STARTED
        before = time.perf_counter()
        for module in ("nb2svc.deployment", "nb2svc.parameters", "nb2svc.pipeline", "nb2svc.verification"):
            __import__(module)  # what the build command imports when it starts
        imports["the build command's imports (the builder: nbclient, nbformat...)"] = time.perf_counter() - before
        imported = time.perf_counter()
        _nbclient()
        _nb2svc()
        _experiments([name for name in os.environ.get("BENCH_STAGES_TRY", "").split(",") if name])
        run: Callable[[], Any] = functools.partial(cli.cli, arguments, prog_name="nb2svc")
    elif program == "nbconvert":
        from nbconvert.nbconvertapp import main as nbconvert_main

        imports["import nbconvert"] = time.perf_counter() - STARTED
        imported = time.perf_counter()
        _nbclient()
        sys.argv = ["jupyter-nbconvert", *arguments]
        run = nbconvert_main
    else:
        raise SystemExit(f"unknown program {program!r}: nb2svc or nbconvert")
    try:
        code = run()
    except SystemExit as exc:
        code = exc.code
    finished = time.perf_counter()
    with open(output, "w") as file:
        json.dump(
            {
                "events": EVENTS,
                "imports": imports,
                "import_seconds": imported - STARTED,
                "run_seconds": finished - imported,
                "exit_code": code if isinstance(code, int) else (0 if code is None else 1),
            },
            file,
        )


if __name__ == "__main__":
    main()
