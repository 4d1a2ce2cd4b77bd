"""The benchmark's models and servers: what each server is asked, how it is started, where it is installed.

nb2svc runs in the project's own environment (.venv, as `make install` made it), so it is measured with
what it installs and nothing more. Every other server has a virtualenv of its own, cached under
BENCH_CACHE (default ~/.cache/nb2svc-bench) in a directory named after the versions it holds, so that
a second run installs nothing:

- the floor's: uvloop, httptools and orjson, over the project's environment (a .pth line), so that the
  floor runs the same scikit-learn, numpy, starlette and uvicorn builds as nb2svc;
- BentoML's and MLflow's: `pip install` of the pinned release with the project's scikit-learn and numpy
  versions (the model is pickled by one and loaded by the other).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import random
import re
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import Request

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = Path(sys.executable).parent
CACHE = Path(
    os.environ.get("BENCH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nb2svc-bench"
)
FLOOR_PACKAGES = ("uvloop==0.23.0", "httptools==0.9.0", "orjson==3.13.0")
# mlflow 3.18.0 is on the index without its mlflow-skinny 3.18.0: pip cannot install it (2026-11-29).
BENTOML = os.environ.get("BENCH_BENTOML", "bentoml==1.4.40")
MLFLOW = os.environ.get("BENCH_MLFLOW", "mlflow==3.17.2")

# What a request asks of an endpoint:
ROW = "one input, per-row endpoint"
ROWS = "batch, per-row endpoint"
MANY = "batch, batchable endpoint"
ONE_TO_MANY = "one input, batchable endpoint"


@dataclass(frozen=True)
class Model:
    name: str
    notebook: Path
    example: Any  # one input: a number, or a list of 8 floats
    rows: list[Any]  # the inputs of a batch

    def as_row(self, x: Any) -> list[Any]:
        return x if isinstance(x, list) else [x]


def models(batch_rows: int) -> dict[str, Model]:
    rng = random.Random(0)
    return {
        "linear": Model(
            "linear", BENCH / "notebooks/linear.ipynb", 3, [round(rng.uniform(0, 20), 3) for _ in range(batch_rows)]
        ),
        "boosting": Model(
            "boosting",
            BENCH / "notebooks/boosting.ipynb",
            [0.5, -1.0, 0.25, 2.0, -0.5, 1.5, 0.0, -2.0],
            [[round(rng.gauss(0, 1), 4) for _ in range(8)] for _ in range(batch_rows)],
        ),
    }


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Server:
    """One server of one model: its command (given a port), its requests by kind, how to read an answer."""

    key: str  # nb2svc, floor, bentoml, mlflow
    label: str
    command: Callable[[int], list[str]]
    cwd: Path
    env: dict[str, str]
    requests: dict[str, Request]
    read: Callable[[str, Any], float]  # (kind, the answer's JSON) -> the first prediction
    probe_kind: str = ROW


def _modelbit_requests(model: Model, batchable: bool) -> dict[str, Request]:
    batch = _json({"data": [[i, x] for i, x in enumerate(model.rows)]})
    requests = {
        ROW: Request("/v1/predict/latest", _json({"data": model.example})),
        ROWS: Request("/v1/predict/latest", batch),
    }
    if batchable:
        requests[MANY] = Request("/v1/predict_many/latest", batch)
        requests[ONE_TO_MANY] = Request("/v1/predict_many/latest", _json({"data": model.example}))
    return requests


def _read_modelbit(kind: str, answer: Any) -> float:
    data = answer["data"]
    return float(data[0][1] if kind in (ROWS, MANY) else data)


def nb2svc(model: Model, service: Path, batchable: bool) -> Server:
    return Server(
        "nb2svc",
        "nb2svc",
        lambda port: [str(BIN / "nb2svc"), "serve", str(service), "--host", "127.0.0.1", "--port", str(port)],
        service,
        dict(os.environ),
        _modelbit_requests(model, batchable),
        _read_modelbit,
    )


def floor(model: Model, service: Path, python: Path) -> Server:
    requests = _modelbit_requests(model, True)
    del requests[ONE_TO_MANY]  # its baseline is the per-row floor's answer to one input
    uvicorn = [str(python), "-m", "uvicorn", "floor_app:app", "--app-dir", str(BENCH)]
    options = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    return Server(
        "floor",
        "floor",
        lambda port: [*uvicorn, *options, "--host", "127.0.0.1", "--port", str(port)],
        BENCH,
        {**os.environ, "BENCH_ARTIFACT": str(service / "artifacts/predict.pkl")},
        requests,
        _read_modelbit,
    )


def bentoml(model: Model, model_pickle: Path, venv: Path) -> Server:
    rows = [model.as_row(x) for x in model.rows]

    def read(kind: str, answer: Any) -> float:
        return float(answer if kind == ROW else answer[0])

    return Server(
        "bentoml",
        "BentoML",
        lambda port: [
            str(venv / "bin/bentoml"),
            *("serve", "bentoml_service:Bench", "--working-dir", str(BENCH), "--host", "127.0.0.1"),
            *("--port", str(port)),
        ],
        BENCH,
        {
            **os.environ,
            "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
            "BENCH_MODEL": str(model_pickle),
            "BENTOML_HOME": str(CACHE / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "True",
        },
        {
            ROW: Request("/predict", _json({"x": model.example})),
            MANY: Request("/predict_many", _json({"xs": rows})),
            ONE_TO_MANY: Request("/predict_many", _json({"xs": [model.as_row(model.example)]})),
        },
        read,
    )


def mlflow(model: Model, model_dir: Path, venv: Path, cwd: Path) -> Server:
    return Server(
        "mlflow",
        "MLflow",
        lambda port: [
            str(venv / "bin/mlflow"),
            *("models", "serve", "-m", str(model_dir), "--env-manager", "local"),
            *("-h", "127.0.0.1", "-p", str(port), "-w", "1"),
        ],
        cwd,
        {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"},  # it runs `uvicorn` from PATH
        {
            ROW: Request("/invocations", _json({"inputs": [model.as_row(model.example)]})),
            MANY: Request("/invocations", _json({"inputs": [model.as_row(x) for x in model.rows]})),
        },
        lambda kind, answer: float(answer["predictions"][0]),
    )


# --- virtualenvs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Venv:
    path: Path
    versions: dict[str, str]
    install_seconds: float
    installed_now: bool

    @property
    def python(self) -> Path:
        return self.path / "bin/python"

    def describe(self) -> str:
        when = "installed now" if self.installed_now else "cached"
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        return f"{versions} ({when}; install took {self.install_seconds:.0f} s)"


def project_version(name: str) -> str:
    return importlib.metadata.version(name)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def ensure_venv(name: str, requirements: list[str], overlay: bool = False) -> Venv | str:
    """The cached virtualenv holding `requirements` (installed now if missing), or why it cannot be had."""
    python_version = f"py{sys.version_info.major}.{sys.version_info.minor}"
    key = _slug(f"{name}-{'-'.join(requirements)}-{python_version}")
    if overlay:  # a different project environment is a different venv
        key += "-over-" + hashlib.sha256(site.getsitepackages()[0].encode()).hexdigest()[:8]
    path = CACHE / "venvs" / key
    ready, log = path / "bench-ready.json", CACHE / "venvs" / f"{key}.log"
    if ready.exists():
        state = json.loads(ready.read_text())
        return Venv(path, state["versions"], state["install_seconds"], False)
    shutil.rmtree(path, ignore_errors=True)  # a run stopped during its install
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing {name} ({' '.join(requirements)}) into {path} ...", flush=True)
    started = time.monotonic()
    with open(log, "w") as output:
        steps = [[sys.executable, "-m", "venv", str(path)]]
        steps.append([str(path / "bin/python"), "-m", "pip", "install", "--disable-pip-version-check", *requirements])
        for step in steps:
            if overlay and step is steps[1]:
                purelib = subprocess.run(
                    [str(path / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                Path(purelib, "bench-project-environment.pth").write_text(site.getsitepackages()[0] + "\n")
            try:
                done = subprocess.run(step, stdout=output, stderr=subprocess.STDOUT, timeout=1200)
            except subprocess.TimeoutExpired:
                shutil.rmtree(path, ignore_errors=True)
                return f"`{' '.join(step[2:])}` took more than 20 minutes (log: {log})"
            if done.returncode != 0:
                shutil.rmtree(path, ignore_errors=True)
                errors = [line for line in log.read_text(errors="replace").splitlines() if "ERROR" in line]
                return f"`{' '.join(step[2:5])} ...` failed: {' '.join(errors)[-400:] or 'see ' + str(log)}"
    seconds = time.monotonic() - started
    names = [re.split(r"[=<>!~\[ ]", requirement)[0] for requirement in requirements]
    versions = json.loads(
        subprocess.run(
            [
                str(path / "bin/python"),
                "-c",
                "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))",
                *names,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    ready.write_text(json.dumps({"versions": versions, "install_seconds": seconds}))
    return Venv(path, versions, seconds, True)


def floor_venv() -> Venv | str:
    return ensure_venv("floor", list(FLOOR_PACKAGES), overlay=True)


def product_venv(name: str, spec: str) -> Venv | str:
    pins = [f"scikit-learn=={project_version('scikit-learn')}", f"numpy=={project_version('numpy')}"]
    return ensure_venv(name, [spec, *pins])


def save_mlflow_model(venv: Venv, model_pickle: Path) -> Path:
    """The model as an MLflow model directory (mlflow.sklearn.save_model), in MLflow's venv; cached.

    MLflow saves with skops by default, which refuses types it does not know (the boosting model's
    TreePredictor) unless they are named as trusted: the benchmark made the model, so it names them.
    """
    digest = hashlib.sha256(model_pickle.read_bytes()).hexdigest()[:16]
    target = CACHE / "mlflow-models" / f"{digest}-{venv.path.name}"
    if (target / "MLmodel").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import pickle, sys, mlflow.sklearn, skops.io\n"
        "model = pickle.load(open(sys.argv[1], 'rb'))\n"
        "trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))\n"
        "mlflow.sklearn.save_model(model, sys.argv[2], skops_trusted_types=trusted or None)\n"
    )
    done = subprocess.run(
        [str(venv.python), "-c", code, str(model_pickle), str(target)], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise RuntimeError(f"saving the MLflow model failed:\n{done.stderr[-2000:]}")
    return target
