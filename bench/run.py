"""`make bench`: nb2svc against a hand-written floor, BentoML and MLflow, on the same models, in one run.

Builds bench/notebooks/{linear,boosting}.ipynb with nb2svc, then in each round, for each model, starts
every server (nb2svc serve; the floor, bench/floor_app.py; BentoML; MLflow) one after the other on CPU 0,
measuring each one's cold start, and runs each workload against every server it applies to, the servers
alternating (their order turns each round) while the others wait idle; then records each one's peak RSS
and stops them. wrk and this process run on CPU 1. Prints one markdown table (medians over the rounds,
each ratio against the floor it is judged by, with its target) and writes it and the raw figures to
the work directory. See bench/RESULTS.md for what each figure means.

Settings (environment variables; the defaults make a run of about 15 minutes on 2 cores):

    BENCH_SECONDS          wrk's seconds per measurement (3); longer, up to BENCH_MAX_SECONDS (20), when
                           fewer than 6 answers per connection arrive in that time
    BENCH_LATENCY_SECONDS  requests timed one by one at 1 connection (1.5 s; at least 100, within 3x that)
    BENCH_ROUNDS           rounds (3)
    BENCH_CONNECTIONS      the many connections (32); BENCH_BATCH_ROWS, rows of a batch (100)
    BENCH_MODELS           linear,boosting
    BENCH_SERVERS          nb2svc,floor,bentoml,mlflow (the floor is what every ratio needs)
    BENCH_WORKLOADS        single-1,single-32,batch-rows,batch-batchable,single-batchable
    BENCH_ASGI             1: also bench/asgi.py, the in-process cost (0: not)
    BENCH_WORK             where the builds, logs and results go (default: a new temporary directory)
    BENCH_CACHE            the cached virtualenvs and MLflow models (default ~/.cache/nb2svc-bench)
    BENCH_BENTOML, BENCH_MLFLOW   the pip requirement of each (bentoml==1.4.40, mlflow==3.17.2)

A short development run: BENCH_SECONDS=1 BENCH_LATENCY_SECONDS=0.5 BENCH_ROUNDS=1 make bench.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pickle
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import measure
import numpy as np
import report
import servers
from measure import Request, Running, WrkResult
from servers import MANY, ONE_TO_MANY, ROW, ROWS, Model, Server, Venv


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


SECONDS = max(1, round(float(_setting("BENCH_SECONDS", "3"))))  # wrk takes whole seconds
LATENCY_SECONDS = float(_setting("BENCH_LATENCY_SECONDS", "1.5"))
MAX_SECONDS = int(_setting("BENCH_MAX_SECONDS", "20"))
ROUNDS = int(_setting("BENCH_ROUNDS", "3"))
CONNECTIONS = int(_setting("BENCH_CONNECTIONS", "32"))
BATCH_ROWS = int(_setting("BENCH_BATCH_ROWS", "100"))
MODELS = _setting("BENCH_MODELS", "linear,boosting").split(",")
SERVERS = _setting("BENCH_SERVERS", "nb2svc,floor,bentoml,mlflow").split(",")
ASGI = _setting("BENCH_ASGI", "1") not in ("0", "no", "off", "false")


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    connections: int
    kinds: dict[str, str]  # server key -> what it is asked
    baseline: str  # the workload whose floor measurement this one is judged against
    floor_label: str
    targets: dict[str, float]  # model -> the least ratio nb2svc should reach
    p99_over_p50: float | None = None  # nb2svc's p99 at most this many times its p50


ANY = {"linear": 0.95, "boosting": 0.95}
WORKLOADS = [
    Workload(
        "single-1",
        "one input, 1 connection",
        1,
        {"nb2svc": ROW, "floor": ROW, "bentoml": ROW, "mlflow": ROW},
        "single-1",
        "floor per-row",
        ANY,
    ),
    Workload(
        "single-32",
        f"one input, {CONNECTIONS} connections",
        CONNECTIONS,
        {"nb2svc": ROW, "floor": ROW, "bentoml": ROW, "mlflow": ROW},
        "single-32",
        "floor per-row",
        ANY,
    ),
    Workload(
        "batch-rows",
        f"batch of {BATCH_ROWS}, per-row function, {CONNECTIONS} conn.",
        CONNECTIONS,
        {"nb2svc": ROWS, "floor": ROWS},
        "batch-rows",
        "floor per-row",
        ANY,
        p99_over_p50=3.0,
    ),
    Workload(
        "batch-batchable",
        f"batch of {BATCH_ROWS}, batchable function, {CONNECTIONS} conn.",
        CONNECTIONS,
        {"nb2svc": MANY, "floor": MANY, "bentoml": MANY, "mlflow": MANY},
        "batch-batchable",
        "floor vectorized",
        ANY,
    ),
    Workload(
        "single-batchable",
        f"one input to a batchable endpoint, {CONNECTIONS} conn.",
        CONNECTIONS,
        {"nb2svc": ONE_TO_MANY, "bentoml": ONE_TO_MANY},
        "single-32",
        "floor per-row",
        {"linear": 1.1, "boosting": 5.0},
    ),
]
SELECTED = _setting("BENCH_WORKLOADS", ",".join(w.key for w in WORKLOADS)).split(",")


@dataclass
class Results:
    """Every figure of the run, by (model, workload, server) or (model, server); one entry per round."""

    wrk: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # each with its "round"
    latency_ns: dict[str, list[int]] = field(default_factory=dict)  # all rounds' samples pooled
    cold_start: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # (round, seconds)
    peak_rss_mib: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # (round, MiB)
    errors: dict[str, str] = field(default_factory=dict)
    stack: dict[str, str] = field(default_factory=dict)  # server -> its event loop and HTTP parser
    asgi: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # model -> body -> app -> µs


def key(*parts: str) -> str:
    return " | ".join(parts)


def batch_available() -> bool:
    import nb2svc

    return hasattr(nb2svc, "batch")


def nb2svc_source() -> str:
    """Where the nb2svc being measured comes from, and its commit when that is a git checkout."""
    import nb2svc

    where = Path(nb2svc.__file__).resolve().parent.parent
    described = subprocess.run(
        ["git", "-C", str(where), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return f"{where}" + (f" at {described.stdout.strip()}" if described.returncode == 0 else "")


def notebook_for(model: Model, work: Path, batchable: bool) -> Path:
    """The model's notebook; without `nb2svc.batch`, a copy whose batchable cells are tagged `skip`."""
    if batchable:
        return model.notebook
    book = json.loads(model.notebook.read_text())
    for cell in book["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "bench-batchable" in tags:
            cell["metadata"]["tags"] = ["skip"]
    copy = work / model.notebook.name
    copy.write_text(json.dumps(book))
    return copy


def build(model: Model, work: Path, batchable: bool) -> tuple[Path, Path]:
    """The built service, and the model it serves pickled plainly (for the servers that are not nb2svc)."""
    service, log = work / model.name / "service", work / model.name / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        notebook = notebook_for(model, work / model.name, batchable)
        command = [str(servers.BIN / "nb2svc"), "build", str(notebook), "-o", str(service), "--force"]
        if subprocess.run(command, stdout=output, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"nb2svc build {notebook} failed: see {log}")
    with open(service / "artifacts/predict.pkl", "rb") as file:
        function = pickle.load(file)
    model_pickle = work / model.name / "model.pkl"
    with open(model_pickle, "wb") as file:
        pickle.dump(function.__globals__["model"], file)
    return service, model_pickle


def expected(model_pickle: Path, model: Model, kind: str) -> float:
    with open(model_pickle, "rb") as file:
        estimator = pickle.load(file)
    x = model.rows[0] if kind in (ROWS, MANY) else model.example
    return float(estimator.predict(np.array([model.as_row(x)], dtype=float))[0])


def check_answers(server: Server, running: Running, model: Model, model_pickle: Path) -> None:
    """Each request answers 200 with the model's prediction (and warms the server up)."""
    for kind, request in server.requests.items():
        for _ in range(5):
            status, body = measure.post(running.port, request)
            if status != 200:
                raise RuntimeError(f"{server.label} answered {status} to {request.path}: {body[:300]!r}")
        got, want = server.read(kind, json.loads(body)), expected(model_pickle, model, kind)
        if abs(got - want) > 1e-6 * max(1.0, abs(want)):
            raise RuntimeError(f"{server.label} answered {got} to {kind}, the model says {want}")


def throughput(running: list[Running], process: Running, request: Request, connections: int) -> tuple[WrkResult, int]:
    """wrk for BENCH_SECONDS, and again for longer when it counted fewer than 6 answers per connection.

    wrk counts only the answers that arrive before it stops: with 32 batches of 100 rows of the boosting
    model in flight, each taking seconds, a short run counts whole waves of answers or none. The second
    run lasts long enough for 6 answers per connection at the first run's rate, at most BENCH_MAX_SECONDS.
    """
    measure.wait_idle(running)
    result = measure.wrk(process, request, connections, SECONDS)
    wanted = 6 * connections
    if result.requests >= wanted or SECONDS >= MAX_SECONDS:
        return result, SECONDS
    rate = result.requests_per_second or wanted / MAX_SECONDS
    seconds = min(MAX_SECONDS, math.ceil(1.2 * wanted / rate))
    measure.wait_idle(running)
    result = measure.wrk(process, request, connections, seconds)
    if result.requests == 0:
        raise RuntimeError(f"wrk counted no answer from {process.name} {request.path} in {seconds} s")
    return result, seconds


def servers_of(workload: Workload) -> set[str]:
    """The servers a workload is run on: all it applies to when selected, the floor when it is a baseline."""
    if workload.key in SELECTED:
        return set(workload.kinds)
    if any(other.baseline == workload.key and other.key in SELECTED for other in WORKLOADS):
        return {"floor"}
    return set()


def rotate(items: list[Any], by: int) -> list[Any]:
    return items[by % len(items) :] + items[: by % len(items)] if items else items


def run_round(
    number: int, model: Model, available: list[Server], model_pickle: Path, work: Path, results: Results
) -> None:
    order = rotate(available, number)
    running: dict[str, Running] = {}
    try:
        for server in order:
            port = measure.free_port()
            log = work / model.name / f"{server.key}.round{number + 1}.log"
            probe = server.requests[server.probe_kind]
            try:
                running[server.key] = started = measure.start(
                    server.label, server.command(port), server.cwd, server.env, port, probe, log
                )
                check_answers(server, started, model, model_pickle)
            except RuntimeError as exc:
                print(f"  {server.label}: {exc}", flush=True)
                results.errors[key(model.name, server.key)] = str(exc).splitlines()[0]
                if server.key in running:
                    measure.stop([running.pop(server.key)])
                continue
            results.cold_start.setdefault(key(model.name, server.key), []).append((number, started.cold_start))
            results.stack[server.key] = measure.event_loop_and_parser(started.pid)
        measured_latency: set[str] = set()
        for workload in WORKLOADS:
            for server in order:
                if server.key not in running or server.key not in servers_of(workload):
                    continue
                kind = workload.kinds[server.key]
                if kind not in server.requests:
                    continue
                process, request = running[server.key], server.requests[kind]
                where = key(model.name, workload.key, server.key)
                try:
                    latency_key = key(model.name, server.key, kind)
                    if latency_key not in measured_latency:
                        measure.wait_idle(list(running.values()))
                        samples = measure.latencies(process.port, request, LATENCY_SECONDS)
                        results.latency_ns.setdefault(latency_key, []).extend(samples)
                        measured_latency.add(latency_key)
                    result, seconds = throughput(list(running.values()), process, request, workload.connections)
                except (RuntimeError, OSError) as exc:
                    print(f"  {where}: {exc}", flush=True)
                    results.errors[where] = str(exc).splitlines()[0]
                    continue
                results.wrk.setdefault(where, []).append({"round": number, **asdict(result)})
                print(
                    f"  {model.name:8} {workload.key:16} {server.label:8} {result.requests_per_second:9.1f} req/s"
                    f"  {result.cpu_us_per_request:8.0f} µs CPU/req  ({seconds} s)",
                    flush=True,
                )
        for name, process in running.items():
            rss = measure.peak_rss_mib(process.pid)
            results.peak_rss_mib.setdefault(key(model.name, name), []).append((number, rss))
    finally:
        measure.stop(list(running.values()))


def in_process(floor_python: Path, service: Path, model: Model) -> dict[str, dict[str, float]]:
    """bench/asgi.py in the floor's environment: the app's own µs per request, without network or server."""
    bodies = {
        "one input": servers._json({"data": model.example}).decode(),
        f"batch of {BATCH_ROWS}": servers._json({"data": [[i, x] for i, x in enumerate(model.rows)]}).decode(),
    }
    command = [str(floor_python), str(servers.BENCH / "asgi.py"), str(service), "--json"]
    command += [f"{label}={body}" for label, body in bodies.items()]
    out = subprocess.run(
        ["taskset", "-c", measure.SERVER_CPU, *command], capture_output=True, text=True, check=True
    ).stdout
    figures: dict[str, dict[str, float]] = json.loads(out.splitlines()[-1])
    return figures


def main() -> None:
    os.sched_setaffinity(0, {int(measure.CLIENT_CPU)})  # this process is a load generator too
    work = Path(os.environ.get("BENCH_WORK") or tempfile.mkdtemp(prefix="nb2svc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_before = os.getloadavg()
    batchable = batch_available()
    notes: list[str] = []
    if not batchable:
        notes.append(
            "nb2svc.batch does not exist in this nb2svc: its batchable endpoints were not built, and the "
            "workloads that need them were not run for nb2svc."
        )
    chosen = {name: servers.models(BATCH_ROWS)[name] for name in MODELS}

    venvs: dict[str, Venv] = {}
    for name in ("floor", "bentoml", "mlflow"):
        if name not in SERVERS:
            continue
        if name == "floor":
            venv = servers.floor_venv()
        else:
            venv = servers.product_venv(name, servers.BENTOML if name == "bentoml" else servers.MLFLOW)
        if isinstance(venv, str):
            print(f"{name} is skipped: {venv}", flush=True)
            notes.append(f"{name} skipped: {venv}")
        else:
            venvs[name] = venv
            notes.append(f"{name}'s virtualenv: {venv.describe()}")
    if "floor" in SERVERS and "floor" not in venvs:
        raise SystemExit("the floor's environment could not be installed: every ratio needs it")

    plan: dict[str, tuple[list[Server], Path, Path]] = {}
    for model in chosen.values():
        print(f"building {model.notebook.relative_to(servers.ROOT)} ...", flush=True)
        service, model_pickle = build(model, work, batchable)
        available: list[Server] = []
        if "nb2svc" in SERVERS:
            available.append(servers.nb2svc(model, service, batchable))
        if "floor" in venvs:
            available.append(servers.floor(model, service, venvs["floor"].python))
        if "bentoml" in venvs:
            available.append(servers.bentoml(model, model_pickle, venvs["bentoml"].path))
        if "mlflow" in venvs:
            try:
                model_dir = servers.save_mlflow_model(venvs["mlflow"], model_pickle)
                available.append(servers.mlflow(model, model_dir, venvs["mlflow"].path, work / model.name))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"MLflow is skipped for {model.name}: {exc}", flush=True)
                notes.append(f"MLflow skipped for {model.name}: {str(exc).splitlines()[0]}")
        plan[model.name] = (available, service, model_pickle)

    results = Results()
    for number in range(ROUNDS):
        print(f"round {number + 1} of {ROUNDS}", flush=True)
        for model in rotate(list(chosen.values()), number):
            available, _, model_pickle = plan[model.name]
            round_started = time.monotonic()
            run_round(number, model, available, model_pickle, work, results)
            print(f"  ({model.name}, round {number + 1}: {time.monotonic() - round_started:.0f} s)", flush=True)
    if ASGI and "floor" in venvs:
        for model in chosen.values():
            print(f"in process: {model.name} ...", flush=True)
            results.asgi[model.name] = in_process(venvs["floor"].python, plan[model.name][1], model)

    load_after = os.getloadavg()
    minutes = (time.monotonic() - started) / 60
    context = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores ({report.cpu_model()}), Python {platform.python_version()}",
        "nb2svc": nb2svc_source(),
        "versions": ", ".join(
            f"{name} {servers.project_version(name)}"
            for name in ("nb2svc", "starlette", "uvicorn", "scikit-learn", "numpy")
        ),
        "settings": (
            f"{ROUNDS} rounds, wrk {SECONDS:g} s per measurement (-t1, {CONNECTIONS} or 1 connections), "
            f"latency {LATENCY_SECONDS:g} s at 1 connection, batches of {BATCH_ROWS}"
        ),
        "load": f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {minutes:.1f} minutes",
        "short": SECONDS < 3 or ROUNDS < 3 or LATENCY_SECONDS < 1.5,
    }
    table = report.markdown(WORKLOADS, SELECTED, chosen, results, context, notes)
    print()
    print(table)
    (work / "results.md").write_text(table + "\n")
    (work / "results.json").write_text(json.dumps({"context": context, **asdict(results)}, indent=1))
    print(f"\n(also in {work / 'results.md'}; raw figures in {work / 'results.json'})")


if __name__ == "__main__":
    main()
