"""`nb2svc build` and `nb2svc serve` through click's CliRunner, with a real Jupyter kernel."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from nb2svc import __version__
from nb2svc.cli import cli
from nb2svc.runtime.app import create_app
from nb2svc.runtime.manifest import MANIFEST_FORMAT, read_manifest

from helpers import FIXTURES, kernel_processes, make_service

LR = FIXTURES / "linear_regression.ipynb"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    output = tmp_path_factory.mktemp("build") / "lr_service"
    result = run("build", str(LR), "-o", str(output), "--json")
    assert result.exit_code == 0, result.output
    return output, result


@pytest.mark.network  # the build locks against the package index
def test_build_writes_the_service_directory(built: tuple[Path, Result]) -> None:
    output, _ = built
    names = {p.name for p in output.iterdir()}
    assert {
        "app.py",
        "nb2svc_runtime",
        "artifacts",
        "manifest.json",
        "requirements.txt",
        "README.md",
        "Dockerfile",
    } <= names
    assert (output / "nb2svc_runtime" / "app.py").is_file()
    assert not list(output.rglob("__pycache__"))


@pytest.mark.network  # the build locks against the package index
def test_manifest_describes_endpoint_artifact_and_build(built: tuple[Path, Result]) -> None:
    output, _ = built
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["manifest_format"] == MANIFEST_FORMAT
    assert read_manifest(output).endpoints[0].route == "/v1/my_lr_deployement/latest"
    assert manifest["name"] == "linear_regression"
    assert manifest["nb2svc_version"] == __version__
    assert manifest["notebook"] == {"file": LR.name, "sha256": hashlib.sha256(LR.read_bytes()).hexdigest()}
    assert manifest["python"]["version"].count(".") == 2
    [endpoint] = manifest["endpoints"]
    assert endpoint["name"] == "my_lr_deployement"
    assert endpoint["signature"] == "(input_x)"
    assert endpoint["cell"] == 6
    artifact = output / endpoint["artifact"]
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == endpoint["sha256"]
    assert [cell["cell"] for cell in manifest["cells"]] == [2, 3, 4, 6, 7]


@pytest.mark.network  # the build locks against the package index
def test_requirements_in_pins_what_the_notebook_imported_with_reasons(built: tuple[Path, Result]) -> None:
    output, _ = built
    specs = [
        line
        for line in (output / "requirements.in").read_text().splitlines()
        if line and not line.startswith(("#", " "))
    ]
    for name in ("scikit-learn", "numpy", "scipy", "cloudpickle", "starlette", "uvicorn"):
        assert f"{name}=={version(name)}" in specs
    assert "matplotlib" not in (output / "requirements.in").read_text()  # imported only by a `skip` cell
    assert not {"ipykernel", "ipython", "jupyter-client", "pyzmq", "tornado"} & {s.split("==")[0] for s in specs}
    assert (
        "    # imported by the notebook (sklearn)\n    # loading my_lr_deployement (sklearn)"
        in (output / "requirements.in").read_text()
    )


@pytest.mark.network  # the build locks against the package index
def test_requirements_txt_is_the_full_hashed_lock(built: tuple[Path, Result]) -> None:
    output, _ = built
    lock = (output / "requirements.txt").read_text()
    manifest = json.loads((output / "manifest.json").read_text())
    pins = manifest["lock"]["pins"]
    assert pins["scikit-learn"] == version("scikit-learn")
    assert {"anyio", "h11", "click"} <= set(pins)  # the closure of starlette and uvicorn, never named in the notebook
    for name, pinned in pins.items():
        assert re.search(
            rf"^{re.escape(name)}=={re.escape(pinned)} \\\n    --hash=sha256:[0-9a-f]{{64}}", lock, re.M | re.I
        )
    assert manifest["lock"]["hashes"] is True
    assert manifest["python"]["minor"] == f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.network  # the build locks against the package index
def test_json_output_is_one_object(built: tuple[Path, Result]) -> None:
    output, result = built
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["service_dir"] == str(output)
    [sklearn] = [r for r in report["requirements"] if r["name"] == "scikit-learn"]
    assert sklearn == {
        "name": "scikit-learn",
        "spec": f"scikit-learn=={version('scikit-learn')}",
        "reasons": [
            {"source": "notebook", "text": "imported by the notebook (sklearn)"},
            {"source": "artifact_load", "text": "loading my_lr_deployement (sklearn)"},
        ],
    }
    assert report["lock"]["pins"] == report["manifest"]["lock"]["pins"]


@pytest.mark.network  # the build locks against the package index
def test_the_notebooks_own_call_is_recorded_as_an_example(built: tuple[Path, Result]) -> None:
    output, _ = built
    [endpoint] = json.loads((output / "manifest.json").read_text())["endpoints"]
    [example] = endpoint["examples"]
    assert example["request"] == {"data": 3}
    assert example["source"] == "notebook"
    assert round(example["response"]["data"], 2) == 12.41


@pytest.mark.network  # the build locks against the package index
def test_progress_per_cell_on_stderr(built: tuple[Path, Result]) -> None:
    _, result = built
    assert "[1/5] cell 2: import numpy as np" in result.stderr
    assert "[4/5] cell 6: def my_lr_deployement(input_x):" in result.stderr
    assert "matplotlib" not in result.stderr


@pytest.mark.network  # the build locks against the package index
def test_each_stage_says_what_it_does_in_order_on_stderr(built: tuple[Path, Result], tmp_path: Path) -> None:
    _, as_json = built
    json.loads(as_json.stdout)  # --json: the stages on stderr, one JSON object alone on stdout
    result = run("build", str(LR), "-o", str(tmp_path / "out"), "--verify", "--no-cache")  # the same inputs: run
    assert result.exit_code == 0, result.output
    for stderr in (as_json.stderr, result.stderr):
        lines = stderr.splitlines()
        stages = [
            next(i for i, line in enumerate(lines) if re.match(pattern, line))
            for pattern in (
                r"looking for this build in the cache… \(\d+\.\d\ds\)$",
                r"starting the kernel python3… \(\d+\.\d\ds\)$",
                r"  \[5/5\] cell ",
                r"observing what the artifacts import… \(\d+\.\d\ds\)$",
                r"locking \d+ requirements with uv… \(\d+\.\d\ds(, from the cache)?\)$",
                r"rendering… \(\d+\.\d\ds\)$",
            )
        ]
        assert stages == sorted(stages), stderr
    assert result.stderr.index("rendering…") < result.stderr.index("verifying…")
    assert "verifying…" not in as_json.stderr


@pytest.mark.network  # the build locks against the package index
def test_built_service_answers_the_modelbit_envelope(built: tuple[Path, Result]) -> None:
    output, _ = built
    with TestClient(create_app(output)) as client:
        batch = client.post("/v1/my_lr_deployement/latest", json={"data": [[1, 3], [2, 5], [3, 9]]}).json()
        assert [[row_id, round(value, 2)] for row_id, value in batch["data"]] == [[1, 12.41], [2, 19.33], [3, 33.16]]
        assert client.post("/v1/my_lr_deployement/latest", json={"data": "three"}).json() == {"data": None}


@pytest.mark.parametrize(
    ("notebook", "extra", "exit_code", "message"),
    [
        ("not_a_notebook.ipynb", [], 3, "is not a Jupyter notebook"),
        ("no_endpoint.ipynb", [], 4, "tag 'predict'"),
        (
            "cell_error.ipynb",
            [],
            5,
            "cell 2 of cell_error.ipynb raised ZeroDivisionError: division by zero\n"
            "  the cell starts with: ratio = 1 / 0",
        ),
        ("sys_exit.ipynb", [], 5, "cell 1 of sys_exit.ipynb raised SystemExit: 0"),
        ("kernel_dies.ipynb", [], 6, "the kernel 'python3' died while running cell 1"),
        (
            "slow_cell.ipynb",
            ["--timeout", "1"],
            6,
            "cell 1 of slow_cell.ipynb (`import time`) was still running after 1 s",
        ),
        (
            "unpicklable.ipynb",
            [],
            7,
            "endpoint 'predict' (cell 2 of unpicklable.ipynb) cannot be serialized: "
            "it references 'guard', a _thread.lock",
        ),
        ("linear_regression.ipynb", ["--kernel", "no-such-kernel"], 6, "no Jupyter kernel named 'no-such-kernel'"),
    ],
)
def test_failures_exit_with_their_code_and_leave_nothing(
    tmp_path: Path, notebook: str, extra: list[str], exit_code: int, message: str
) -> None:
    result = run("build", str(FIXTURES / notebook), "-o", str(tmp_path / "out"), *extra)
    assert result.exit_code == exit_code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "\x1b[" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the output nor a staging directory
    assert kernel_processes() == []


def test_failed_build_removes_the_parent_folders_it_created(tmp_path: Path) -> None:
    result = run("build", str(FIXTURES / "cell_error.ipynb"), "-o", str(tmp_path / "a" / "b" / "out"))
    assert result.exit_code == 5
    assert list(tmp_path.iterdir()) == []


def test_internal_error_still_prints_one_json_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("nb2svc.pipeline.build", broken)  # a bug cannot be produced on purpose otherwise
    result = CliRunner().invoke(cli, ["build", str(LR), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == {
        "type": "internal_error",
        "exit_code": 1,
        "message": "internal error RuntimeError: boom",
    }


def test_json_failure_report(tmp_path: Path) -> None:
    result = run("build", str(FIXTURES / "unpicklable.ipynb"), "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 7
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["error"]["exit_code"] == 7
    assert report["error"]["variable"] == "guard"
    assert report["error"]["variable_type"] == "_thread.lock"


@pytest.mark.network  # the build locks against the package index
def test_existing_output_is_refused_untouched_then_replaced_with_force(tmp_path: Path) -> None:
    output = tmp_path / "service"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    refused = run("build", str(LR), "-o", str(output))
    assert refused.exit_code == 8
    assert "already exists: pass --force" in refused.stderr
    assert [p.name for p in output.iterdir()] == ["keep.txt"]

    replaced = run("build", str(LR), "-o", str(output), "--force")
    assert replaced.exit_code == 0, replaced.output
    assert not (output / "keep.txt").exists()
    assert (output / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["service"]


def test_failed_build_with_force_keeps_the_existing_directory(tmp_path: Path) -> None:
    output = tmp_path / "service"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    result = run("build", str(FIXTURES / "cell_error.ipynb"), "-o", str(output), "--force")
    assert result.exit_code == 5
    assert (output / "keep.txt").read_text() == "mine"


def test_serve_refuses_a_directory_that_is_not_a_service(tmp_path: Path) -> None:
    result = run("serve", str(tmp_path))
    assert result.exit_code == 10
    assert "is not a service directory (missing: app.py, manifest.json, nb2svc_runtime)" in result.stderr


def test_serve_refuses_ray_options_that_cannot_go_together_and_says_every_reason(tmp_path: Path) -> None:
    result = run("serve", str(tmp_path), "--ray", "--workers", "2", "--replicas", "2", "--autoscale", "1:3")
    assert result.exit_code == 2
    assert "--workers 2 with --ray: Ray Serve runs replicas, ask for them with --replicas" in result.stderr
    assert "--replicas with --autoscale: give a fixed number or MIN:MAX, not both" in result.stderr
    alone = run("serve", str(tmp_path), "--replicas", "2", "--address", "10.0.0.1:6379")
    assert alone.exit_code == 2
    assert "--replicas, --address without --ray: they say how to run on Ray Serve" in alone.stderr


@pytest.mark.parametrize("bounds", ["3", "3:1", "a:b", "0:0"])
def test_serve_refuses_an_autoscale_that_is_not_min_max(tmp_path: Path, bounds: str) -> None:
    result = run("serve", str(tmp_path), "--ray", "--autoscale", bounds)
    assert result.exit_code == 2
    assert f"--autoscale {bounds}: give MIN:MAX replicas" in result.stderr


def double(x):
    return x * 2


def test_serve_ray_without_ray_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = make_service(tmp_path / "service", runnable=True, double=double)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = run("serve", str(service), "--ray")
    assert result.exit_code == 2
    assert "Ray Serve is not installed: pip install 'nb2svc[ray]'" in result.stderr


def test_version() -> None:
    assert run("--version").output.strip() == f"nb2svc, version {__version__}"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["build", "model.ipynb", "--bogus"], "No such option '--bogus'."),
        (["build"], "Missing argument 'NOTEBOOK'."),
        (["build", str(FIXTURES / "linear_regression.ipynb"), "--example", "x", "{"], "is not JSON"),
    ],
)
def test_a_command_line_click_refuses_still_prints_one_json_object(arguments: list[str], message: str) -> None:
    """The nb2svc command itself (not CliRunner, which bypasses ``main``): a pipeline reading stdout gets JSON."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "nb2svc", *arguments, "--json"], capture_output=True, text=True)
    assert done.returncode == 2
    [line] = done.stdout.splitlines()
    error = json.loads(line)["error"]
    assert (error["type"], error["exit_code"]) == ("usage", 2) and message in error["message"]
    assert message in done.stderr and "Usage: nb2svc build" in done.stderr  # click's own message, as before
    plain = subprocess.run([sys.executable, "-m", "nb2svc", *arguments], capture_output=True, text=True)
    assert (plain.returncode, plain.stdout) == (2, "")  # without --json, nothing on stdout
    assert subprocess.run([sys.executable, "-m", "nb2svc", "--version"], capture_output=True).returncode == 0
