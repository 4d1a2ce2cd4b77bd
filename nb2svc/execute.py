"""Stage 2: run the notebook's cells in order in a real Jupyter kernel, kept open for capture."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import nbformat
from jupyter_client.kernelspec import NoSuchKernel
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from nb2svc.errors import CellFailed, KernelFailed
from nb2svc.kernel_side import loaded, reads, recording
from nb2svc.kernel_side.reply import RESULT_MIME, reply
from nb2svc.notebook import PREDICT_TAG, Cell, NotebookSpec

BUILDING = "NB2SVC_BUILDING"  # set in the environment of a build's kernel
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class CellProgress:
    """Reported before a cell runs (``seconds`` is None) and after it ran."""

    cell: Cell
    position: int
    total: int
    seconds: float | None = None


@dataclass(frozen=True)
class CellTiming:
    number: int
    seconds: float


@dataclass(frozen=True)
class ExecutedNotebook:
    """A notebook whose cells all ran; its kernel is still alive for the capture stage."""

    spec: NotebookSpec
    kernel: Kernel
    kernel_name: str
    timings: tuple[CellTiming, ...]
    modules_at_start: tuple[str, ...]

    def files_read(self) -> tuple[str, ...]:
        """The files in the notebook's folder the cells read and did not write, relative to it (``reads``)."""
        return tuple(self.kernel.call(reads.files_read))


class Kernel:
    """The started kernel. nb2svc's kernel-side code is sent to it once, when it starts (see ``kernel_side``),
    into a package of its own beside the notebook's namespace; each call of it is then one line."""

    def __init__(self, client: NotebookClient) -> None:
        self._client = client
        self._run(_INSTALLATION, "installation of its kernel-side code")

    def call(self, function: Callable[..., Any], **arguments: Any) -> Any:
        """Run ``function(**arguments)``, a function of ``nb2svc.kernel_side``, in the kernel; its JSON result."""
        line = (
            f"__import__('sys').modules[{_in_kernel(reply.__module__)!r}].reply("
            f"{_relative(function.__module__)!r}, {function.__name__!r}, {json.dumps(arguments)!r})"
        )
        cell = self._run(line, f"{function.__name__}()")
        for output in cell.outputs:
            if RESULT_MIME in output.get("data", {}):
                return output["data"][RESULT_MIME]
        raise RuntimeError(f"nb2svc's kernel call {function.__name__}() returned nothing; outputs: {cell.outputs}")

    def _run(self, code: str, what: str) -> NotebookNode:
        cell: NotebookNode = nbformat.v4.new_code_cell(code)
        self._client.nb.cells.append(cell)
        try:
            self._client.execute_cell(cell, len(self._client.nb.cells) - 1, store_history=False)
        except CellExecutionError as exc:  # a bug of nb2svc's, or a broken kernel environment
            raise RuntimeError(f"nb2svc's {what} failed in the kernel: {exc.ename}: {exc.evalue}") from exc
        except CellTimeoutError as exc:
            raise KernelFailed(
                f"nb2svc's {what} in the kernel ran past --timeout (serializing or calling the endpoints "
                "takes longer than a cell may): raise --timeout.",
            ) from exc
        except DeadKernelError as exc:
            raise KernelFailed(f"the kernel died during nb2svc's {what} (out of memory? a crash?)") from exc
        return cell


KERNEL_PACKAGE = "_nb2svc"  # what nb2svc's modules are called in the kernel: a name the notebook never imports
# The modules sent, named relative to nb2svc: packages before their modules, each module after those it imports.
SENT_TO_KERNEL = (
    "in_fresh_python",
    "kernel_side",
    "kernel_side.failures",
    "kernel_side.runtime",
    "kernel_side.loaded",
    "kernel_side.reads",
    "kernel_side.recording",
    "kernel_side.unpicklable",
    "kernel_side.capture",
    "kernel_side.reply",
)
_NB2SVC = Path(__file__).resolve().parent


def _relative(module: str) -> str:
    return module.partition(".")[2]  # nb2svc.kernel_side.capture -> kernel_side.capture


def _in_kernel(module: str) -> str:
    return f"{KERNEL_PACKAGE}.{_relative(module)}"


def _installation() -> str:
    """The one cell that sends the kernel-side code: ``kernel_side/install.py`` run on every module's source."""
    modules = []
    for name in SENT_TO_KERNEL:
        path = _NB2SVC.joinpath(*name.split("."))
        is_package = path.is_dir()
        source = (path / "__init__.py" if is_package else path.with_suffix(".py")).read_text(encoding="utf-8")
        modules.append((name, is_package, source))
    script = (_NB2SVC / "kernel_side" / "install.py").read_text(encoding="utf-8") + "\ninstall(PACKAGE, MODULES)\n"
    return (
        f"exec(compile({script!r}, '<nb2svc: install>', 'exec'), "
        f"{{'__name__': '_nb2svc_install', 'PACKAGE': {KERNEL_PACKAGE!r}, 'MODULES': {modules!r}}})"
    )


_INSTALLATION = _installation()


OnCell = Callable[[CellProgress], None]
OnKernel = Callable[[str, "float | None"], None]  # the kernel's name; None as it starts, then the seconds it took


@contextmanager
def execute_notebook(
    spec: NotebookSpec,
    *,
    kernel_name: str | None = None,
    timeout: float | None = None,
    on_cell: OnCell | None = None,
    runtime_path: Path | None = None,
    kernel_manager: KernelManager | None = None,
    on_kernel: OnKernel | None = None,
) -> Iterator[ExecutedNotebook]:
    """Run every cell of ``spec`` that is not tagged ``skip``; yield with the kernel still open.

    The kernel runs with the notebook's folder as working directory and is shut
    down when the block exits, whether it succeeded or not. With ``runtime_path``
    (the folder holding the service's ``nb2svc_runtime``), the calls later cells
    make of the endpoints are recorded as examples. ``kernel_manager``, if given, starts the kernel (one of
    an environment nb2svc made, ``target_python.kernel_in``), ``kernel_name`` naming it in messages.
    ``on_kernel`` hears the kernel's name when it starts starting, then the seconds it took.
    """
    name = kernel_name or spec.kernel_name
    cells = [nbformat.v4.new_code_cell(cell.source) for cell in spec.cells_to_run]
    client = NotebookClient(
        nbformat.v4.new_notebook(cells=cells),
        km=kernel_manager,
        kernel_name=name,
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(spec.directory)}},
    )
    with ExitStack() as stack:
        kernel_stderr = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
        report = on_kernel or (lambda name, seconds: None)
        report(name, None)
        started = time.perf_counter()
        _start_kernel(stack, client, name, kernel_stderr)
        kernel = Kernel(client)
        report(name, time.perf_counter() - started)
        modules_at_start = tuple(kernel.call(loaded.loaded_modules))
        exclude = [str(runtime_path)] if runtime_path else []
        kernel.call(reads.record_reads, folder=str(spec.directory), exclude=exclude)
        record = _recording(kernel, spec, runtime_path)
        timings = tuple(_run_cells(client, spec, name, timeout, kernel_stderr, on_cell or (lambda _: None), record))
        yield ExecutedNotebook(
            spec=spec, kernel=kernel, kernel_name=name, timings=timings, modules_at_start=modules_at_start
        )


def _recording(kernel: Kernel, spec: NotebookSpec, runtime_path: Path | None) -> Callable[[], None]:
    """What to do after a ``predict`` cell: have the kernel record the calls of the endpoints from then on."""
    if runtime_path is None:
        return lambda: None
    names = [endpoint.name for endpoint in spec.endpoints]
    return lambda: kernel.call(recording.record_calls, names=names, service_dir=str(runtime_path))


def _start_kernel(stack: ExitStack, client: NotebookClient, name: str, stderr: IO[str]) -> None:
    try:
        # BUILDING tells nb2svc.deploy in the notebook that this run is a build's: it publishes nothing then
        # cleanup_kc: shut down even a kernel whose manager nb2svc gave (nbclient leaves those running by default)
        # PYTHONHASHSEED: a set of strings iterates in an order that changes with each process's hash seed, and
        # cloudpickle writes it in that order; one seed makes two builds of the same inputs the same bytes
        environment = {"PYTHONHASHSEED": "0", **os.environ, BUILDING: "1"}
        stack.enter_context(client.setup_kernel(stderr=stderr, env=environment, cleanup_kc=True))
    except NoSuchKernel as exc:
        raise KernelFailed(
            f"no Jupyter kernel named {name!r} is installed. Pass --kernel NAME with one from "
            "`jupyter kernelspec list`, or install ipykernel in the environment the notebook needs.",
            kernel=name,
        ) from exc
    except (RuntimeError, TimeoutError) as exc:
        raise KernelFailed(f"the Jupyter kernel {name!r} did not start: {exc}{_tail(stderr)}", kernel=name) from exc


def _run_cells(
    client: NotebookClient,
    spec: NotebookSpec,
    kernel_name: str,
    timeout: float | None,
    kernel_stderr: IO[str],
    on_cell: OnCell,
    after_predict_cell: Callable[[], None],
) -> Iterator[CellTiming]:
    total = len(spec.cells_to_run)
    for index, (cell, node) in enumerate(zip(spec.cells_to_run, client.nb.cells, strict=False)):
        on_cell(CellProgress(cell=cell, position=index + 1, total=total))
        started = time.perf_counter()
        try:
            client.execute_cell(node, index)
        except CellExecutionError as exc:
            raise _cell_failed(spec, cell, exc) from None
        except CellTimeoutError as exc:
            raise KernelFailed(
                f"cell {cell.number} of {spec.path.name} (`{cell.first_line}`) was still running after "
                f"{timeout:g} s. Raise --timeout, or tag the cell 'skip' if serving does not need it.",
                cell=cell.number,
            ) from exc
        except DeadKernelError as exc:
            raise KernelFailed(
                f"the kernel {kernel_name!r} died while running cell {cell.number} of {spec.path.name} "
                f"(`{cell.first_line}`): the process exited or crashed (out of memory, os._exit, a segfault). "
                f"Run the notebook top to bottom in Jupyter to reproduce.{_tail(kernel_stderr)}",
                cell=cell.number,
            ) from exc
        seconds = time.perf_counter() - started
        if PREDICT_TAG in cell.tags:  # from here on, the notebook's calls of its endpoints are examples
            after_predict_cell()
        on_cell(CellProgress(cell=cell, position=index + 1, total=total, seconds=seconds))
        yield CellTiming(number=cell.number, seconds=round(seconds, 4))


def _cell_failed(spec: NotebookSpec, cell: Cell, exc: CellExecutionError) -> CellFailed:
    ename, evalue = strip_ansi(exc.ename), strip_ansi(exc.evalue)
    return CellFailed(
        f"cell {cell.number} of {spec.path.name} raised {ename}: {evalue}\n"
        f"  the cell starts with: {cell.first_line}\n"
        "Fix the cell and check with Restart & Run All in Jupyter, "
        "or tag it 'skip' if serving does not need it.",
        cell=cell.number,
        exception=ename,
        exception_message=evalue,
        traceback=strip_ansi(exc.traceback),
    )


def _tail(kernel_stderr: IO[str], lines: int = 10) -> str:
    """The last lines the kernel process wrote to its stderr, to show with a failure."""
    kernel_stderr.seek(0)
    text = strip_ansi(kernel_stderr.read()).strip()
    return "\nThe kernel's last words:\n  " + "\n  ".join(text.splitlines()[-lines:]) if text else ""


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)
