"""End to end, as a user would: nb2svc installed from its wheel, real kernel, real uvicorn, real HTTP.

These create fresh virtual environments with uv (from the package index, then its cache).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx2 as httpx
import pytest

from helpers import FIXTURES, ROOT, request_log_line, running_server, uvicorn_access_lines

pytestmark = pytest.mark.e2e

UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))


def make_venv(path: Path, *packages: str, requirements: Path | None = None) -> Path:
    """A fresh virtual environment for this Python, with ``packages`` installed; returns its bin/."""
    subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, str(path)], check=True)
    args = [*packages, *(["-r", str(requirements)] if requirements else [])]
    subprocess.run([UV, "pip", "install", "--quiet", "--python", str(path / "bin" / "python"), *args], check=True)
    return path / "bin"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([UV, "build", "--quiet", "--wheel", "--out-dir", str(out), str(ROOT)], check=True)
    [built] = out.glob("nb2svc-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh environment where nb2svc was installed from its wheel (not editable)."""
    return make_venv(tmp_path_factory.mktemp("user") / "venv", str(wheel), "scikit-learn")


@pytest.fixture(scope="module")
def lr_service(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("build") / "lr_service"
    done = subprocess.run(
        [str(installed / "nb2svc"), "build", str(FIXTURES / "linear_regression.ipynb"), "-o", str(output)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return output


def test_wheel_carries_the_runtime_and_templates(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "nb2svc/runtime/app.py",
        "nb2svc/runtime/envelope.py",
        "nb2svc/templates/app.py",
        "nb2svc/templates/README.md",
        "nb2svc/templates/Dockerfile",
        "nb2svc/kernel_side/capture.py",
        "nb2svc/in_fresh_python.py",
    ):
        assert required in names


def test_python_dash_m_entry_point(installed: Path) -> None:
    done = subprocess.run([str(installed / "python"), "-m", "nb2svc", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("nb2svc, version ")


def test_build_then_serve_answers_over_http(installed: Path, lr_service: Path, unused_tcp_port: int) -> None:
    command = [str(installed / "nb2svc"), "serve", str(lr_service), "--port", str(unused_tcp_port)]
    with running_server(command, unused_tcp_port) as server:
        base = server.url
        url = f"{base}/v1/my_lr_deployement/latest"
        batch = httpx.post(url, content='{"data":[[1,3],[2,5],[3,9]]}')
        assert batch.status_code == 200
        assert [[i, round(v, 2)] for i, v in batch.json()["data"]] == [[1, 12.41], [2, 19.33], [3, 33.16]]
        assert round(httpx.post(url, json={"data": 3}).json()["data"], 2) == 12.41
        assert httpx.post(url, json={"data": "three"}).json() == {"data": None}
        bad = httpx.post(url, content="{not json")
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "bad_request"


def test_service_directory_runs_with_uvicorn_where_nb2svc_is_not_installed(
    lr_service: Path, tmp_path: Path, unused_tcp_port: int
) -> None:
    bin_dir = make_venv(tmp_path / "venv", requirements=lr_service / "requirements.txt")
    absent = subprocess.run(
        [str(bin_dir / "python"), "-c", "import nb2svc"], cwd=lr_service, capture_output=True, text=True
    )
    assert "No module named 'nb2svc'" in absent.stderr
    command = [
        str(bin_dir / "python"),
        "-m",
        "uvicorn",
        "app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(unused_tcp_port),
    ]
    with running_server(command, unused_tcp_port, cwd=lr_service) as server:
        base = server.url
        response = httpx.post(
            f"{base}/v1/my_lr_deployement/latest", json={"data": [["a", 9]]}, headers={"X-Request-ID": "batch"}
        )
        assert response.status_code == 200
        [[row_id, value]] = response.json()["data"]
        assert row_id == "a" and round(value, 2) == 33.16
        assert request_log_line(server, "batch")["rows"] == 1
        metrics = httpx.get(f"{base}/metrics").text
        output = server.output()
    assert 'nb2svc_server_info{http="httptools",loop="uvloop"} 1.0' in metrics  # the lock installed them
    assert uvicorn_access_lines(output) == [] and "Application startup complete." in output


def test_failed_build_in_a_subprocess_exits_with_its_code(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed / "nb2svc"), "build", str(FIXTURES / "cell_error.ipynb"), "-o", str(tmp_path / "out"), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 5
    assert json.loads(done.stdout)["error"]["cell"] == 2
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_artifact_leaves_the_server_up_and_honest(
    installed: Path, lr_service: Path, tmp_path: Path, unused_tcp_port: int
) -> None:
    service = Path(shutil.copytree(lr_service, tmp_path / "service"))
    artifact = service / "artifacts" / "my_lr_deployement.pkl"
    artifact.write_bytes(artifact.read_bytes()[:-20])  # truncated on disk
    command = [str(installed / "nb2svc"), "serve", str(service), "--port", str(unused_tcp_port)]
    with running_server(command, unused_tcp_port) as server:
        base = server.url
        assert httpx.get(f"{base}/health").status_code == 200
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 503
        assert "does not match the manifest (sha256" in ready.json()["error"]["message"]
        predict = httpx.post(f"{base}/v1/my_lr_deployement/latest", json={"data": 3})
        assert predict.status_code == 503
        assert predict.json()["error"]["message"] == ready.json()["error"]["message"]
        assert httpx.get(f"{base}/health").status_code == 200  # still up after answering
