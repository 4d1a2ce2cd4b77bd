"""``nb2svc serve NOTEBOOK.ipynb --watch`` on a real port with real file edits: a good rebuild takes traffic once
it is ready, a failed one leaves the last good build answering, a save that changed nothing costs no build, and
stopping it takes the server and its registry with it. A client streams requests through all of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nb2svc.server_process import free_port

from helpers import FIXTURES


def write_notebook(path: Path, broken: bool = False, other: bool = True) -> None:
    endpoints = "def predict(x: float) -> float:\n    return scale(x) + total"
    endpoints += "\n\ndef other(x: float) -> float:\n    return -x" if other else ""
    cells = [
        new_code_cell("import pandas as pd\nfrom helper import scale"),
        new_code_cell(("1 / 0\n" if broken else "") + "total = float(pd.read_csv('data.csv')['v'].sum())"),
        new_code_cell(endpoints, metadata={"tags": ["predict"]}),
        new_code_cell("predict(1.0)"),
    ]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


class Watcher:
    """The watching process, its stderr read line by line as it comes; ``wait_for`` waits on a condition."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<exited>")
            self.changed.notify_all()

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 180) -> int:
        """The index of the first line from ``after`` on that matches ``pattern``."""

        def found() -> int | None:
            return next((i for i in range(after, len(self.lines)) if re.search(pattern, self.lines[i])), None)

        with self.changed:
            if not self.changed.wait_for(lambda: found() is not None or "<exited>" in self.lines, timeout):
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n" + "\n".join(self.lines))
            index = found()
            assert index is not None, f"exited before a line matching {pattern!r}:\n" + "\n".join(self.lines)
            return index

    def stop(self) -> None:
        if self.process.poll() is None:  # as Ctrl-C would (its temporary registry goes with it), then for sure
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.join()  # it read to the end of the pipe
        assert self.process.stderr is not None
        self.process.stderr.close()


def post(url: str, data: Any) -> tuple[int, Any, str | None]:
    request = urllib.request.Request(url, json.dumps({"data": data}).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())["data"], response.headers["X-Deployment-Version"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), None


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Watcher, Path, int]]:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "helper.py").write_text("def scale(x):\n    return 2 * x\n")
    (folder / "data.csv").write_text("v\n1\n2\n")
    write_notebook(folder / "model.ipynb")
    port = free_port()
    command = [sys.executable, "-m", "nb2svc", "serve", "model.ipynb", "--watch", "--port", str(port)]
    watcher = Watcher(command, folder)
    try:
        yield watcher, folder, port
    finally:
        watcher.stop()


@pytest.mark.network  # each build locks against the package index (then from the lock cache)
@pytest.mark.e2e
def test_watch_swaps_to_good_rebuilds_and_keeps_serving_through_a_failed_one(
    watched: tuple[Watcher, Path, int],
) -> None:
    watcher, folder, port = watched
    url = f"http://127.0.0.1:{port}/v1/predict/latest"
    line = watcher.wait_for(r"serving predict version 1 at ")
    assert post(url.replace("predict", "other"), 1.0) == (200, -1.0, "1")
    watcher.wait_for(r"watching model\.ipynb, (data\.csv|helper\.py), (data\.csv|helper\.py): a save builds again")
    assert post(url, 1.0) == (200, 5.0, "1")

    answers: list[tuple[int, Any, str | None]] = []
    done = threading.Event()

    def stream() -> None:
        while not done.is_set():
            answers.append(post(url, 1.0))

    client = threading.Thread(target=stream)
    client.start()
    good = (folder / "model.ipynb").read_bytes()
    try:
        (folder / "helper.py").write_text("def scale(x):\n    return 3 * x\n")  # a local module
        line = watcher.wait_for(r"serving predict version 2 at ", line)
        assert post(url, 1.0) == (200, 6.0, "2")

        write_notebook(folder / "model.ipynb", broken=True)  # the notebook, broken
        line = watcher.wait_for(
            r"build failed; still serving the last good build \(predict version 2, other version 2\)", line
        )
        assert "cell 2 of model.ipynb raised ZeroDivisionError: division by zero" in watcher.lines[line + 1]
        assert post(url, 1.0) == (200, 6.0, "2")

        (folder / "model.ipynb").write_bytes(good)  # fixed as it was: the build of version 2, from the cache
        line = watcher.wait_for(r"the build is the service already served; still serving the last good build", line)
        assert "[1/4] cell 1" not in watcher.lines[line - 1]  # reused: no cell ran

        helper = (folder / "helper.py").read_bytes()
        (folder / "helper.py").write_text("def scale(x):\n    return 3 *\n")  # a local module, broken
        line = watcher.wait_for(r"build failed; still serving the last good build", line)
        assert "SyntaxError" in watcher.lines[line + 1]
        (folder / "helper.py").write_bytes(helper)  # fixed: what the failed run read is watched
        line = watcher.wait_for(r"the build is the service already served", line)

        (folder / "data.csv").write_text("v\n1\n2\n10\n")  # a data file it read, and an endpoint removed
        write_notebook(folder / "model.ipynb", other=False)
        line = watcher.wait_for(r"serving predict version 3 at ", line)
        assert post(url, 1.0) == (200, 16.0, "3")
        assert post(url.replace("predict", "other"), 1.0)[0] == 404
    finally:
        done.set()
        client.join()
    assert answers and {answer for answer in answers} <= {(200, 5.0, "1"), (200, 6.0, "2"), (200, 16.0, "3")}
    assert {version for _, _, version in answers} >= {"2", "3"}  # the stream saw the swaps
    assert not any("serving predict version 4" in text for text in watcher.lines)  # the failure published nothing

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/deployments", timeout=10) as response:
        server = json.loads(response.read())

    def kept(name: str) -> list[str]:
        return sorted(p.name for p in (Path(server["registry"]) / name).iterdir() if p.name.isdigit())

    assert kept("predict") == ["2", "3"]  # what is served and the one before it: version 1 is retired
    assert kept("other") == []  # the notebook has it no more
    watcher.process.send_signal(signal.SIGTERM)
    assert watcher.process.wait(timeout=60) == 0
    assert watcher.lines[-2:] == ["stopped", "<exited>"]
    with pytest.raises(ProcessLookupError):  # the server it started stopped before it did, and its registry is gone
        os.kill(server["pid"], 0)
    assert not Path(server["registry"]).exists()
    with pytest.raises(urllib.error.URLError):
        post(url, 1.0)


@pytest.mark.network
@pytest.mark.e2e
def test_watch_builds_with_the_parameters_given(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "parameters.ipynb", tmp_path / "scaled.ipynb")
    port = free_port()
    command = [sys.executable, "-m", "nb2svc", "serve", "scaled.ipynb", "--watch", "--port", str(port)]
    watcher = Watcher([*command, "-p", "scale", "3", "-p", "typo", "1"], tmp_path)
    try:
        watcher.wait_for(r"warning: Passed unknown parameter: typo")  # papermill's warning, as the build says it
        watcher.wait_for(r"serving scaled version 1 at ")
        assert post(f"http://127.0.0.1:{port}/v1/scaled/latest", 2.0) == (200, 6.0, "1")  # scale 3, not 2
    finally:
        watcher.stop()


def test_watch_takes_a_notebook_and_one_process(tmp_path: Path) -> None:
    def refused(*arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "nb2svc", "serve", *arguments, "--watch"], capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr
        return done.stderr

    assert "takes the notebook to build and serve" in refused()
    assert "without --workers 2" in refused("model.ipynb", "--workers", "2")
    without = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(tmp_path), "-p", "scale", "3"], capture_output=True, text=True
    )
    assert without.returncode == 2 and "they go with --watch" in without.stderr
    (tmp_path / "service").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(tmp_path / "service"), "--watch"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--watch takes a notebook (.ipynb)" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(tmp_path / "x.ipynb"), "--watch", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--watch serves on this machine only" in done.stderr
