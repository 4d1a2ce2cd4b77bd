"""The Modelbit workflow, end to end: a notebook in a real kernel trains, deploys, trains again and deploys again,
while a steady stream of requests goes to the registry server that the first deploy started."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

from nb2svc.cli import cli
from nb2svc.server_process import free_port, running_server

pytestmark = pytest.mark.e2e

CELLS = [
    "import nb2svc\nfrom sklearn.linear_model import LinearRegression\n"
    "model = LinearRegression().fit([[1], [2], [3]], [2, 4, 6])",
    "def predict(x: float) -> float:\n    return float(model.predict([[x]])[0])",
    "first = nb2svc.deploy(predict, examples=[1.0])\nfirst",
    "model = LinearRegression().fit([[1], [2], [3]], [20, 40, 60])  # a better model",
    "second = nb2svc.deploy(predict, examples=[1.0])\nprint(f'deployed in {second.seconds:.2f} s')\nsecond",
]


def post(url: str, data: Any) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(url, json.dumps({"data": data}).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), _titled(response.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), _titled(exc.headers.items())


def _titled(headers: Any) -> dict[str, str]:
    """Header names as the README writes them (X-Deployment-Version): the server sends them in lower case."""
    return {name.title(): value for name, value in headers}


class Stream:
    """Client threads posting to ``url`` until stopped; counts answers per X-Deployment-Version, and failures."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.answered: Counter[str] = Counter()
        self.failures: list[str] = []
        self.saw_second = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                status, body, headers = post(self.url, 1.0)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status != 200:
                self.failures.append(f"{status} {body}")
                continue
            self.answered[headers["X-Deployment-Version"]] += 1
            if headers["X-Deployment-Version"] == "2":
                self.saw_second.set()

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()


@contextlib.contextmanager
def notebook_kernel(folder: Path) -> Iterator[NotebookClient]:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    client = NotebookClient(notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(folder)}})
    with client.setup_kernel():
        yield client


def run_cell(client: NotebookClient, index: int) -> str:
    """Run cell ``index``; its text and HTML outputs, joined."""
    cell = client.nb.cells[index]
    client.execute_cell(cell, index)
    texts = []
    for output in cell.outputs:
        texts.append(output.get("text", ""))
        texts += [str(value) for value in output.get("data", {}).values()]
    return "\n".join(texts)


def test_deploy_twice_from_a_notebook_while_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, port = tmp_path / "registry", free_port()
    monkeypatch.setenv("NB2SVC_REGISTRY", str(registry))  # the kernel inherits them
    monkeypatch.setenv("NB2SVC_SERVER", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    server_pid = None
    try:
        with notebook_kernel(tmp_path) as client:
            for index in range(2):
                run_cell(client, index)
            shown = run_cell(client, 2)
            started = re.search(r"Started a registry server at \S+ \(pid (\d+);", shown)
            assert started, shown
            server_pid = int(started.group(1))
            assert f"{base}/v1/predict/latest" in shown and "curl -s -XPOST" in shown  # the deployment says how
            assert "<table>" in shown  # and shows as HTML in Jupyter
            assert post(f"{base}/v1/predict/latest", 1.0)[:2] == (200, {"data": pytest.approx(2.0)})

            with Stream(f"{base}/v1/predict/latest") as stream:
                run_cell(client, 3)
                shown = run_cell(client, 4)  # returns once the server serves version 2
                assert stream.saw_second.wait(timeout=60)
            assert stream.failures == []
            assert stream.answered["1"] > 0 and stream.answered["2"] > 0  # the stream went on through the deploy
            print(re.search(r"deployed in \S+ s", shown).group(0))  # type: ignore[union-attr]

            for version, expected in (("1", 2.0), ("2", 20.0), ("latest", 20.0)):
                status, body, headers = post(f"{base}/v1/predict/{version}", 1.0)
                assert (status, body["data"]) == (200, pytest.approx(expected)), version
            assert headers["X-Deployment-Version"] == "2"  # latest is 2

            aliased = CliRunner().invoke(cli, ["alias", "predict", "prod", "1", "--registry", str(registry)])
            assert aliased.exit_code == 0, aliased.output
            deadline = time.monotonic() + 30
            while post(f"{base}/v1/predict/prod", 1.0)[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            status, body, headers = post(f"{base}/v1/predict/prod", 1.0)
            assert (status, body["data"], headers["X-Deployment-Version"]) == (200, pytest.approx(2.0), "1")
        # the kernel is gone: the server it started stops too
        deadline = time.monotonic() + 30
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server_pid)
    finally:
        if server_pid is not None and _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    return True


SCRIPT = """
import sys, nb2svc
offset = float(sys.argv[1])

def shifted(x: float) -> float:
    return x + offset

print(nb2svc.deploy(shifted, examples=[1.0]).version_url)
"""


def test_two_deploys_of_one_name_at_once_get_distinct_versions_both_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, port = tmp_path / "registry", free_port()
    monkeypatch.setenv("NB2SVC_REGISTRY", str(registry))
    monkeypatch.setenv("NB2SVC_SERVER", f"127.0.0.1:{port}")
    script = tmp_path / "deploy_shifted.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "nb2svc", "serve", "--registry", str(registry), "--port", str(port)]
    with running_server(command, port):
        deploys = [
            subprocess.Popen([sys.executable, str(script), offset], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
            for offset in ("10", "20")
        ]
        urls = sorted(process.communicate(timeout=300)[0].strip() for process in deploys)
        assert [process.returncode for process in deploys] == [0, 0]
        base = f"http://127.0.0.1:{port}/v1/shifted"
        assert urls == [f"{base}/1", f"{base}/2"]
        answers = {post(url, 1.0)[1]["data"] for url in urls}
        assert answers == {11.0, 21.0}  # each its own function, neither lost
