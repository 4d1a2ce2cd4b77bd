"""`make bench-build`: how long `nb2svc build` takes, next to a plain `jupyter nbconvert --execute` of the notebook.

For each notebook (the example, fixtures/linear_regression.ipynb, and fixtures/house_prices.ipynb, which
imports pandas and scikit-learn), in interleaved rounds (the order of the notebooks and of the rows turns
each round), the wall time of each command as a subprocess:

    plain nbconvert      jupyter nbconvert --to notebook --execute, output to the work directory
    plain nbclient       jupyter-execute (nbclient's own command, from the project's .venv)
    cold lock, uv        nb2svc build --resolver uv, NB2SVC_CACHE_DIR a new empty folder
    cold lock, pip-compile   the same with --resolver pip-compile
    warm lock            nb2svc build, NB2SVC_CACHE_DIR already holding the lock
    unchanged rebuild    the warm lock's command again, with nb2svc's build cache (when this nb2svc has one)

and, for the breakdown, the warm-lock build and nbconvert run again under bench/build_stages.py (the same
command in one process, with timers around each stage; and the warm build with the kernel killed rather
than asked to exit, to measure that change). Rows (b)-(d) pass --no-cache when `nb2svc build --help` lists
it, so that they measure a build, not the build cache.

"Cold" means nb2svc's lock cache, not the network: before the rounds, one build with each resolver fills
uv's and pip's own caches (~/.cache/uv, ~/.cache/pip: downloads and index pages), and they stay as they are.
The plain runs execute a copy of the notebook without its cells tagged `skip`, which nb2svc does not run
either (the example's `skip` cell imports matplotlib, which is not installed). nbconvert is not one of
nb2svc's dependencies: it is installed in a cached virtualenv over the project's .venv (a .pth line, as the
floor's in bench/servers.py), so the kernel it starts sees the same packages.

Settings (environment variables):

    BENCH_BUILD_ROUNDS     rounds (3)
    BENCH_BUILD_NOTEBOOKS  notebooks, comma-separated (fixtures/linear_regression.ipynb,fixtures/house_prices.ipynb)
    BENCH_BUILD_STAGES     1: the breakdown runs too (0: not)
    BENCH_BUILD_ROWS       only these rows, by their names in lower case with dashes (plain-nbconvert,
                           cold-lock-uv, warm-lock, stages-warm-lock-kernel-killed...; default: all)
    BENCH_NBCONVERT        the pip requirement of nbconvert (nbconvert==7.17.2)
    BENCH_WORK             where the builds, logs and results go (default: a new temporary directory)
    BENCH_CACHE            the cached virtualenvs (default ~/.cache/nb2svc-bench)
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import report
import servers

ROOT = servers.ROOT
BIN = servers.BIN
ROUNDS = int(os.environ.get("BENCH_BUILD_ROUNDS") or "3")
NOTEBOOKS = [
    ROOT / name
    for name in (
        os.environ.get("BENCH_BUILD_NOTEBOOKS") or "fixtures/linear_regression.ipynb,fixtures/house_prices.ipynb"
    ).split(",")
]
STAGES = (os.environ.get("BENCH_BUILD_STAGES") or "1") not in ("0", "no", "off", "false")
NBCONVERT = os.environ.get("BENCH_NBCONVERT") or "nbconvert==7.17.2"
ONLY = [row for row in (os.environ.get("BENCH_BUILD_ROWS") or "").split(",") if row]
TARGET_SECONDS = 1.5  # the warm-lock build at most the plain run plus this

PLAIN, NBCLIENT = "plain nbconvert", "plain nbclient"
COLD_UV, COLD_PIP, WARM, REBUILD = "cold lock, uv", "cold lock, pip-compile", "warm lock", "unchanged rebuild"
STAGES_NB2SVC, STAGES_NBCONVERT = "stages: warm lock", "stages: nbconvert"
STAGES_KILLED, STAGES_OVERLAP = "stages: warm lock, kernel killed", "stages: warm lock, observing during shutdown"
STAGES_REBUILD = "stages: unchanged rebuild"
STAGED = (STAGES_NB2SVC, STAGES_NBCONVERT, STAGES_KILLED, STAGES_OVERLAP, STAGES_REBUILD)
TRY = {STAGES_KILLED: "immediate-shutdown", STAGES_OVERLAP: "observe-during-shutdown"}
TABLE_ROWS = (PLAIN, NBCLIENT, COLD_UV, COLD_PIP, WARM, REBUILD)
LABELS = {
    PLAIN: "(a) `jupyter nbconvert --to notebook --execute`",
    NBCLIENT: "(a') `jupyter-execute` (nbclient)",
    COLD_UV: "(b) `nb2svc build`, cold lock, uv",
    COLD_PIP: "(c) `nb2svc build`, cold lock, pip-compile",
    WARM: "(d) `nb2svc build`, warm lock",
    REBUILD: "(e) `nb2svc build`, unchanged rebuild",
}
_CELL_LINE = re.compile(r"^\s*\[(\d+)/(\d+)\] cell (\d+): (.*?)\s+\((\d+(?:\.\d+)?)s\)$")
_STAGE_LINE = re.compile(r"^(\S.*?)…\s+\((\d+(?:\.\d+)?)s(?:, (.*))?\)$")


@dataclass
class Run:
    """One command's run: its wall time, and what nb2svc said about it (--json, the stage lines on stderr)."""

    row: str
    notebook: str
    round: int
    wall: float
    exit_code: int
    seconds: float | None = None  # --json's: nb2svc.build's own time
    lock_cached: bool | None = None
    lock_seconds: float | None = None
    reused: bool | None = None  # --json's cache.reused: the build cache's result, no kernel started
    stages: dict[str, float] = field(default_factory=dict)  # the CLI's stage lines: "observing ...": seconds
    notes: dict[str, str] = field(default_factory=dict)
    cells: list[float] = field(default_factory=list)
    in_process: dict[str, Any] | None = None  # bench/build_stages.py's figures


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def has_build_cache() -> bool:
    shown = subprocess.run([str(BIN / "nb2svc"), "build", "--help"], capture_output=True, text=True, check=True)
    return "--no-cache" in shown.stdout


def plain_copy(notebook: Path, work: Path) -> Path:
    """The notebook without its cells tagged `skip`: what nb2svc runs, for nbconvert and nbclient to run."""
    book = json.loads(notebook.read_text(encoding="utf-8"))
    book["cells"] = [c for c in book["cells"] if "skip" not in c.get("metadata", {}).get("tags", [])]
    copy = work / "plain" / notebook.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(json.dumps(book), encoding="utf-8")
    return copy


def parse_stderr(run: Run, text: str) -> None:
    for line in text.splitlines():
        cell = _CELL_LINE.match(line)
        if cell:
            run.cells.append(float(cell.group(5)))
            continue
        stage = _STAGE_LINE.match(line.strip())
        if stage:
            name = stage.group(1).split(" ")[0]  # observing, locking, rendering
            run.stages[name] = float(stage.group(2))
            if stage.group(3):
                run.notes[name] = stage.group(3)


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(
        f"$ {' '.join(command)}\n--- exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
    return wall, done


class Bench:
    def __init__(self, work: Path, nbconvert_python: Path | None, build_cache: bool) -> None:
        self.work = work
        self.nbconvert_python = nbconvert_python
        self.build_cache = build_cache
        self.warm_cache = work / "cache-warm"
        self.plain = {notebook.name: plain_copy(notebook, work) for notebook in NOTEBOOKS}

    def env(self, cache_dir: Path) -> dict[str, str]:
        return {**os.environ, "NB2SVC_CACHE_DIR": str(cache_dir), "PYTHONDONTWRITEBYTECODE": ""}

    def build_command(self, notebook: Path, output: Path, resolver: str | None, no_cache: bool) -> list[str]:
        command = [str(BIN / "nb2svc"), "build", str(notebook), "-o", str(output), "--force", "--json"]
        command += ["--resolver", resolver] if resolver else []
        return command + (["--no-cache"] if no_cache and self.build_cache else [])

    def commands(self, row: str, notebook: Path) -> tuple[list[str], Path] | None:
        """The command of a row, and the NB2SVC_CACHE_DIR it runs with (a new empty one for a cold lock)."""
        out = self.work / "out" / notebook.stem
        plain = self.plain[notebook.name]
        stages = [sys.executable, str(servers.BENCH / "build_stages.py"), str(self.work / "stages.json")]
        if row == PLAIN:
            if self.nbconvert_python is None:
                return None
            execute = ["--to", "notebook", "--execute", str(plain), "--output-dir", str(out / "nbconvert")]
            # `jupyter` (jupyter_core, in .venv) runs the `jupyter-nbconvert` it finds first on PATH: nbconvert's
            return [str(BIN / "jupyter"), "nbconvert", *execute], self.warm_cache
        if row == STAGES_NBCONVERT:
            if self.nbconvert_python is None:
                return None
            stages[0] = str(self.nbconvert_python)
            execute = ["--to", "notebook", "--execute", str(plain), "--output-dir", str(out / "nbconvert")]
            return [*stages, "nbconvert", *execute], self.warm_cache
        if row == NBCLIENT:
            return [str(BIN / "jupyter-execute"), str(plain)], self.warm_cache
        if row in (COLD_UV, COLD_PIP):
            cold = Path(tempfile.mkdtemp(prefix="cache-cold-", dir=self.work))
            resolver = "uv" if row == COLD_UV else "pip-compile"
            return self.build_command(notebook, out / "cold", resolver, no_cache=True), cold
        if row == WARM:
            return self.build_command(notebook, out / "warm", None, no_cache=True), self.warm_cache
        if row in (STAGES_NB2SVC, STAGES_KILLED, STAGES_OVERLAP):
            warm = self.build_command(notebook, out / "warm", None, no_cache=True)
            return [*stages, "nb2svc", *warm[1:]], self.warm_cache
        if row == REBUILD:
            if not self.build_cache:
                return None
            return self.build_command(notebook, out / "rebuild", None, no_cache=False), self.warm_cache
        if row == STAGES_REBUILD:
            if not self.build_cache:
                return None
            rebuild = self.build_command(notebook, out / "rebuild", None, no_cache=False)
            return [*stages, "nb2svc", *rebuild[1:]], self.warm_cache
        raise ValueError(row)

    def run(self, row: str, notebook: Path, number: int) -> Run | None:
        found = self.commands(row, notebook)
        if found is None:
            return None
        command, cache_dir = found
        env = self.env(cache_dir)
        if row == PLAIN and self.nbconvert_python is not None:
            env["PATH"] = f"{self.nbconvert_python.parent}:{env.get('PATH', '')}"
        if row in TRY:
            env["BENCH_STAGES_TRY"] = TRY[row]
        log = self.work / "logs" / f"{notebook.stem}.{_slug(row)}.round{number + 1}.log"
        wall, done = timed(command, env, log)
        if row in (COLD_UV, COLD_PIP):
            shutil.rmtree(cache_dir, ignore_errors=True)
        run = Run(row, notebook.name, number, wall, done.returncode)
        if done.returncode != 0:
            print(f"  {notebook.name} {row}: exit {done.returncode}, see {log}", flush=True)
            return run
        if row.startswith("stages"):
            run.in_process = json.loads((self.work / "stages.json").read_text())
        if row in (COLD_UV, COLD_PIP, WARM, REBUILD, STAGES_NB2SVC, STAGES_KILLED, STAGES_OVERLAP, STAGES_REBUILD):
            parse_stderr(run, done.stderr)
            if done.stdout.strip().startswith("{"):
                answer = json.loads(done.stdout.strip().splitlines()[-1])
                run.seconds = answer.get("seconds")
                run.lock_cached = answer.get("lock", {}).get("cached")
                run.lock_seconds = answer.get("lock", {}).get("seconds")
                run.reused = answer.get("cache", {}).get("reused")
        print(f"  {notebook.name:26} {row:30} {wall:6.2f} s", flush=True)
        return run

    def warm_up(self) -> None:
        """Fill uv's and pip's caches and the warm lock (and build) cache; run each plain command once."""
        for notebook in NOTEBOOKS:
            print(f"warming up: {notebook.name}", flush=True)
            for resolver in ("uv", "pip-compile") if selected(COLD_PIP) else ("uv",):
                scratch = Path(tempfile.mkdtemp(prefix="cache-warm-up-", dir=self.work))
                command = self.build_command(notebook, self.work / "out" / "warm-up", resolver, no_cache=True)
                wall, done = timed(
                    command, self.env(scratch), self.work / "logs" / f"{notebook.stem}.warm-up.{resolver}.log"
                )
                shutil.rmtree(scratch, ignore_errors=True)
                if done.returncode != 0:
                    raise SystemExit(f"nb2svc build {notebook} --resolver {resolver} failed:\n{done.stderr[-3000:]}")
                print(f"  nb2svc build --resolver {resolver}: {wall:.1f} s", flush=True)
            for row in (WARM, REBUILD, PLAIN, NBCLIENT):  # REBUILD's first run fills the build cache
                warm_up = self.run(row, notebook, -1)
                if warm_up is not None and warm_up.exit_code != 0:
                    raise SystemExit(f"{row} failed on {notebook}: see the log in {self.work / 'logs'}")


def selected(row: str) -> bool:
    return not ONLY or _slug(row).lower() in ONLY


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def rotate(items: list[Any], by: int) -> list[Any]:
    return items[by % len(items) :] + items[: by % len(items)] if items else items


# --- the report ----------------------------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else ""


def _of(results: Results, notebook: str, row: str) -> list[Run]:
    return [run for run in results.runs if run.notebook == notebook and run.row == row and run.exit_code == 0]


def table(results: Results, build_cache: bool) -> str:
    lines = [
        "| notebook | command | wall s, median | range | minus plain nbconvert, s (per round: median, range) "
        "| nb2svc's own figures |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    verdicts = []
    for notebook in NOTEBOOKS:
        plain = {run.round: run.wall for run in _of(results, notebook.name, PLAIN)}
        for row in TABLE_ROWS:
            runs = _of(results, notebook.name, row)
            if not runs:
                why = "no build cache in this nb2svc" if row == REBUILD and not build_cache else "not run"
                if row == PLAIN and not plain:
                    why = "nbconvert could not be installed"
                lines.append(f"| {notebook.name} | {LABELS[row]} | | | | {why} |")
                continue
            walls = [run.wall for run in runs]
            differences = [run.wall - plain[run.round] for run in runs if run.round in plain]
            extra = ""
            if differences and row != PLAIN:
                extra = f"{statistics.median(differences):+.2f} ({min(differences):+.2f} to {max(differences):+.2f})"
            own = ""
            if runs[0].seconds is not None:
                inside = statistics.median(run.seconds or 0.0 for run in runs)
                lock = statistics.median(run.lock_seconds or 0.0 for run in runs)
                cached = "from the cache" if all(run.lock_cached for run in runs) else "resolved"
                own = f"build {inside:.2f} s; lock {lock:.2f} s ({cached})"
                if any(run.reused for run in runs):  # (b)-(d) pass --no-cache: never reused
                    reused = sum(bool(run.reused) for run in runs)
                    own += f"; reused from the build cache {reused} of {len(runs)} times, no kernel"
                observing = [run.stages["observing"] for run in runs if "observing" in run.stages]
                own += f"; observing {statistics.median(observing):.2f} s" if observing else ""
            median = f"{statistics.median(walls):.2f}"
            lines.append(f"| {notebook.name} | {LABELS[row]} | {median} | {_spread(walls)} | {extra} | {own} |")
            if row == WARM and differences:
                over = statistics.median(differences)
                ok = over <= TARGET_SECONDS
                verdicts.append(
                    f"{notebook.name}: the warm-lock build costs the plain run {over:+.2f} s (median of the per-round "
                    f"differences): {'✓' if ok else '✗'} (target ≤ +{TARGET_SECONDS:g} s)"
                )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in verdicts)


_NOT_LEAVES = ("(all of it)", "execute: leaving", "nb2svc in the kernel: capture()")


def _leaves(run: Run) -> dict[str, float]:
    """The in-process figures of a staged run as stage -> seconds, each second counted once."""
    assert run.in_process is not None
    figures: dict[str, float] = {}
    for what, seconds in run.in_process["imports"].items():
        figures[what] = seconds
    for label, seconds in run.in_process["events"]:
        if any(part in label for part in _NOT_LEAVES):
            continue
        if label.startswith("cell: "):
            figures["cells, all of them"] = figures.get("cells, all of them", 0.0) + seconds
            label = "- " + label
        figures[label] = figures.get(label, 0.0) + seconds
    inside = run.in_process["import_seconds"] + run.in_process["run_seconds"]
    figures["interpreter start and exit (wall less the in-process time)"] = run.wall - inside
    counted = sum(seconds for label, seconds in figures.items() if not label.startswith(("- cell", "interpreter")))
    figures["the rest (argument parsing, printing, nbconvert's writing; between the timed stages)"] = inside - counted
    return figures


def breakdown(results: Results) -> str:
    parts = []
    for notebook in NOTEBOOKS:
        columns = {row: _of(results, notebook.name, row) for row in STAGED}
        if not columns[STAGES_NB2SVC]:
            continue
        per_row = {row: [_leaves(run) for run in runs] for row, runs in columns.items()}
        shown = STAGED
        order: list[str] = []
        for row in shown:
            for figures in per_row[row]:
                order += [label for label in figures if label not in order]
        lines = [
            f"**{notebook.name}**: median seconds over the rounds, each stage in one process (bench/build_stages.py):",
            "",
            "| stage | `nb2svc build`, warm lock | `jupyter nbconvert --execute` "
            "| the same build, the kernel killed at the end | the same build, observing during the kernel's shutdown "
            "| `nb2svc build`, unchanged rebuild |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label in sorted(order, key=lambda label: (_group(label), order.index(label))):
            values = [[figures[label] for figures in per_row[row] if label in figures] for row in shown]
            lines.append(
                f"| {label} | " + " | ".join(f"{statistics.median(v):.3f}" if v else "" for v in values) + " |"
            )
        walls = [[run.wall for run in columns[row]] for row in shown]
        lines.append(
            "| **wall, all of it** | " + " | ".join(f"{statistics.median(w):.2f}" if w else "" for w in walls) + " |"
        )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _group(label: str) -> int:
    for number, start in enumerate(
        (
            "interpreter",
            "import",
            "the build command",
            "read",
            "the build cache: the key",
            "the build cache: look",
            "the build cache: the cached",
            "copy",
            "kernel: start",
            "kernel: connect",
            "nb2svc in the kernel: send",
            "nb2svc in the kernel: loaded",
            "cells",
            "- cell",
            "nb2svc in the kernel: record",
            "capture",
            "nb2svc in the kernel: files",
            "kernel: shut",
            "observe",
            "gather",
            "lock",
            "render",
            "publish",
            "the build cache: keep",
            "the rest",
        )
    ):
        if label.startswith(start):
            return number
    return 99


def main() -> None:
    work = Path(os.environ.get("BENCH_WORK") or tempfile.mkdtemp(prefix="nb2svc-bench-build-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_before = os.getloadavg()
    results = Results()
    build_cache = has_build_cache()
    if not build_cache:
        results.notes.append(
            "`nb2svc build --help` lists no --no-cache: no build cache in this nb2svc (row e not run)."
        )
    venv = servers.ensure_venv("nbconvert", [NBCONVERT], overlay=True)
    if isinstance(venv, str):
        print(f"nbconvert is skipped: {venv}", flush=True)
        results.notes.append(f"nbconvert skipped: {venv}")
        nbconvert_python = None
    else:
        nbconvert_python = venv.python
        results.notes.append(f"nbconvert's virtualenv: {venv.describe()}")
    bench = Bench(work, nbconvert_python, build_cache)
    bench.warm_up()
    rows = [row for row in list(TABLE_ROWS) + (list(STAGED) if STAGES else []) if selected(row)]
    for number in range(ROUNDS):
        print(f"round {number + 1} of {ROUNDS}", flush=True)
        for notebook in rotate(NOTEBOOKS, number):
            for row in rotate(rows, number):
                run = bench.run(row, notebook, number)
                if run is not None:
                    results.runs.append(run)
    load_after = os.getloadavg()
    minutes = (time.monotonic() - started) / 60
    versions = ", ".join(
        f"{name} {servers.project_version(name)}"
        for name in (
            "nb2svc",
            "nbclient",
            "jupyter_client",
            "ipykernel",
            "uv",
            "pip-tools",
            "pip",
            "pandas",
            "scikit-learn",
        )
    )
    heading = (
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores ({report.cpu_model()}), "
        f"Python {platform.python_version()}; {versions}; nb2svc from {_source()}. {ROUNDS} rounds; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {minutes:.1f} minutes."
    )
    text = heading + "\n\n" + table(results, build_cache)
    if STAGES:
        text += "\n\n" + breakdown(results)
    text += "\n\nNotes:\n\n" + "\n".join(f"- {note}" for note in results.notes)
    print()
    print(text)
    (work / "results.md").write_text(text + "\n")
    (work / "results.json").write_text(json.dumps({"heading": heading, **asdict(results)}, indent=1))
    print(f"\n(also in {work / 'results.md'}; raw figures in {work / 'results.json'}; logs in {work / 'logs'})")


def _source() -> str:
    described = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return f"{ROOT}" + (f" at {described.stdout.strip()}" if described.returncode == 0 else "")


if __name__ == "__main__":
    main()
