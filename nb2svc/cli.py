"""The `nb2svc` command: parses options, calls the library, turns its errors into messages and exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from nb2svc import __version__
from nb2svc.build import build
from nb2svc.errors import Nb2svcError
from nb2svc.execute import CellProgress
from nb2svc.serve import serve


@click.group(context_settings={"auto_envvar_prefix": "NB2SVC", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nb2svc")
def cli() -> None:
    """Turn a Jupyter notebook into a self-contained model service."""


@cli.command("build")
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Service directory to write.  [default: NAME_service]")
@click.option("--force", is_flag=True, help="Replace the output directory if it exists.")
@click.option("--kernel", "kernel_name", help="Jupyter kernel to run the notebook in.  [default: the notebook's]")
@click.option(
    "--timeout", type=click.FloatRange(min=0), default=600, show_default=True, help="Seconds one cell may run; 0 for no limit."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the result on stdout.")
def build_command(
    notebook: Path, output: Path | None, force: bool, kernel_name: str | None, timeout: float, as_json: bool
) -> None:
    """Run NOTEBOOK in a Jupyter kernel and write its service directory."""
    progress = _Progress()
    with _reporting_errors(as_json, progress):
        result = build(
            notebook, output, force=force, kernel_name=kernel_name, timeout=timeout or None, on_cell=progress
        )
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(f"built {result.service_dir} in {result.seconds:.1f}s", err=True)
    for endpoint in result.manifest["endpoints"]:
        click.echo(f"  POST {endpoint['route']}  {endpoint['name']}{endpoint['signature']}", err=True)
    click.echo(f"  requirements: {', '.join(str(pin) for pin in result.requirements)}", err=True)
    click.echo(f"serve it with: nb2svc serve {result.service_dir}", err=True)


@cli.command("serve")
@click.argument("service_dir", default=".", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
def serve_command(service_dir: Path, host: str, port: int, workers: int) -> None:
    """Serve SERVICE_DIR (a directory written by `nb2svc build`) with uvicorn."""
    with _reporting_errors(False, None):
        serve(service_dir, host=host, port=port, workers=workers)


class _Progress:
    """Prints one line per cell on stderr: the cell when it starts, its time when it ends."""

    def __init__(self) -> None:
        self.open_line = False

    def __call__(self, progress: CellProgress) -> None:
        if progress.seconds is None:
            text = progress.cell.first_line
            text = text if len(text) <= 60 else text[:57] + "..."
            click.echo(f"  [{progress.position}/{progress.total}] cell {progress.cell.number}: {text}", nl=False, err=True)
            self.open_line = True
        else:
            click.echo(f"  ({progress.seconds:.2f}s)", err=True)
            self.open_line = False

    def end_line(self) -> None:
        if self.open_line:
            click.echo(err=True)
            self.open_line = False


@contextmanager
def _reporting_errors(as_json: bool, progress: _Progress | None) -> Iterator[None]:
    try:
        yield
    except Nb2svcError as exc:
        if progress is not None:
            progress.end_line()
        if as_json:
            click.echo(json.dumps({"ok": False, "error": exc.to_dict()}))
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug of nb2svc's: keep the traceback, and the promise of one JSON object
        if progress is not None:
            progress.end_line()
        if as_json:
            message = f"internal error {type(exc).__name__}: {exc}"
            click.echo(json.dumps({"ok": False, "error": {"type": "internal_error", "exit_code": 1, "message": message}}))
        raise


def main() -> None:
    cli(prog_name="nb2svc")
