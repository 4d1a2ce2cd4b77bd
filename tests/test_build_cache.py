"""The build cache: an unchanged rebuild reuses the last result without starting a kernel; a change to any input
the cache keys on (the notebook, its parameters, a file it read, a local module, the kernel's environment,
nb2svc, an option) runs the notebook again.

Each run of the notebook appends a line to a file outside its folder (``runs``): the count of lines is the
count of kernel runs, and a spy on the kernel manager's start confirms no kernel started for a reuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager, KernelManager
from nbformat.v4 import new_code_cell, new_notebook

import nb2svc
from nb2svc import build_cache
from nb2svc.locking import LockOptions
from nb2svc.pipeline import BuildResult

OFFLINE = LockOptions(offline=True)  # the lock is not what is tested here: no resolver, no network


@dataclass
class Project:
    folder: Path
    notebook: Path
    runs: Path
    started: list[str]  # kernels started in this process

    def build(self, output: str = "service", **options: Any) -> BuildResult:
        options.setdefault("lock_options", OFFLINE)
        return nb2svc.build(self.notebook, self.folder.parent / output, force=True, **options)

    def run_count(self) -> int:
        return len(self.runs.read_text().splitlines()) if self.runs.exists() else 0

    def write_notebook(self, offset_default: int = 1, extra: str = "") -> None:
        cells = [
            new_code_cell("import pandas as pd\nfrom helper import scale"),
            new_code_cell(f"offset = {offset_default}", metadata={"tags": ["parameters"]}),
            new_code_cell(
                f"open({str(self.runs)!r}, 'a').write('run\\n')\n"
                "total = float(pd.read_csv('data.csv')['v'].sum())\n"
                "open('written.txt', 'w').write('made here')\n"
                "made = open('written.txt').read()\n"
                "import os, shutil\n"  # directories opened (rmtree opens them): not inputs
                "shutil.rmtree('out', ignore_errors=True)\n"
                "os.makedirs('out/plots')\n"
                "open('out/plots/figure.txt', 'w').write('drawn')" + extra
            ),
            new_code_cell(
                "def predict(x: float) -> float:\n    return scale(x) + total + offset", metadata={"tags": ["predict"]}
            ),
            new_code_cell("predict(1.0)"),
        ]
        notebook = new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, self.notebook)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "helper.py").write_text("def scale(x):\n    return 2 * x\n")
    (folder / "data.csv").write_text("v\n1\n2\n")
    monkeypatch.setenv("NB2SVC_CACHE_DIR", str(tmp_path / "cache"))
    # as on a user's machine: imports write __pycache__, and a later import opens only the .pyc
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    started: list[str] = []
    launch = KernelManager._async_launch_kernel  # where every kernel manager starts the kernel's process

    async def spied(self: KernelManager, kernel_cmd: list[str], **kwargs: Any) -> None:
        started.append(self.kernel_name)
        await launch(self, kernel_cmd, **kwargs)

    monkeypatch.setattr(KernelManager, "_async_launch_kernel", spied)
    monkeypatch.setattr(AsyncKernelManager, "_launch_kernel", spied)
    made = Project(folder, folder / "model.ipynb", tmp_path / "runs.txt", started)
    made.write_notebook()
    yield made


def answer(result: BuildResult) -> Any:
    return result.manifest.endpoints[0].examples[0].response["data"]


def test_an_unchanged_rebuild_reuses_the_result_without_a_kernel(project: Project) -> None:
    first = project.build()
    assert (first.reused, project.run_count(), len(project.started)) == (None, 1, 1)
    assert sorted(item.path for item in first.inputs) == [
        "data.csv",
        "helper.py",
    ]  # read; written.txt was made by the notebook
    assert answer(first) == 2.0 + 3.0 + 1

    again = project.build("again")
    assert again.reused is not None
    assert (project.run_count(), len(project.started)) == (1, 1)  # no kernel started, no cell ran
    assert again.manifest == first.manifest  # the same service: version, examples, when it was built
    assert again.to_dict()["cache"] == {
        "key": first.cache_key,
        "reused": True,
        "built_in_seconds": first.to_dict()["seconds"],
    }
    files = sorted(p.relative_to(again.service_dir) for p in again.service_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(first.service_dir) for p in first.service_dir.rglob("*") if p.is_file())
    assert (again.service_dir / "requirements.txt").read_bytes() == (
        first.service_dir / "requirements.txt"
    ).read_bytes()
    assert again.lock.pins == first.lock.pins and again.lock.cached

    project.build(cache=False)  # --no-cache: the notebook runs
    assert project.run_count() == 2


def test_each_input_change_runs_the_build_again(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = project.run_count

    def rebuilt(**options: Any) -> BuildResult:
        before = runs()
        result = project.build(**options)
        assert runs() == before + 1, f"not rebuilt after the change ({options})"
        assert project.build(**options).reused is not None  # and then cached again
        assert runs() == before + 1
        return result

    assert answer(rebuilt()) == 6.0

    (project.folder / "data.csv").write_text("v\n1\n2\n10\n")  # a data file next to the notebook
    assert answer(rebuilt()) == 16.0
    os.utime(project.folder / "data.csv", ns=(1, 1))  # touched, same content: still the same build
    assert project.build().reused is not None

    (project.folder / "helper.py").write_text("def scale(x):\n    return 3 * x\n")  # a local module
    assert answer(rebuilt()) == 17.0

    project.write_notebook(offset_default=5)  # the notebook's content
    assert answer(rebuilt()) == 21.0

    assert answer(rebuilt(parameters={"offset": 100})) == 116.0  # parameters
    assert project.build().reused is not None  # the previous parameters' entry is still there

    rebuilt(python_packages=("six",))  # an option
    rebuilt(examples={"predict": [2.0]})

    monkeypatch.setattr(build_cache, "__version__", "99.0")  # another nb2svc
    rebuilt()


def test_a_change_to_the_kernels_environment_runs_the_build_again(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel of its own (JUPYTER_PATH) whose Python also imports from ``site``: a distribution installed
    there is a change to the kernel's environment."""
    site = tmp_path / "site"
    site.mkdir()
    spec = tmp_path / "jupyter" / "kernels" / "cached"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "cached", "language": "python", "env": {"PYTHONPATH": str(site)}}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))

    project.build(kernel_name="cached")
    assert project.build(kernel_name="cached").reused is not None
    assert project.started == ["cached"]
    (site / "extra-1.0.dist-info").mkdir()  # what pip install leaves
    assert project.build(kernel_name="cached").reused is None
    assert project.started == ["cached", "cached"]


def test_code_digest_follows_nb2svc_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "nb2svc"
    copy.mkdir()
    (copy / "pipeline.py").write_text("one")
    monkeypatch.setattr(build_cache, "_PACKAGE", copy)
    build_cache.code_digest.cache_clear()
    try:
        before = build_cache.code_digest()
        (copy / "pipeline.py").write_text("two")
        build_cache.code_digest.cache_clear()
        assert build_cache.code_digest() != before
    finally:
        build_cache.code_digest.cache_clear()


def test_the_cli_says_it_reused_and_no_cache_runs_again(project: Project, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "nb2svc", "build", str(project.notebook), "-o", str(tmp_path / "out")]
    command += ["--force", "--offline", "--json"]
    environment = {**os.environ, "NB2SVC_CACHE_DIR": str(tmp_path / "cache")}

    def build(*extra: str) -> tuple[dict[str, Any], str]:
        done = subprocess.run([*command, *extra], capture_output=True, text=True, env=environment, check=True)
        return json.loads(done.stdout), done.stderr

    first, _ = build()
    assert first["cache"]["reused"] is False and sorted(first["inputs"]) == ["data.csv", "helper.py"]
    again, _ = build()
    assert again["cache"]["reused"] is True and again["manifest"] == first["manifest"]
    assert project.run_count() == 1
    forced, _ = build("--no-cache")
    assert forced["cache"]["reused"] is False and project.run_count() == 2

    plain = subprocess.run(command[:-1], capture_output=True, text=True, env=environment, check=True).stderr
    assert "reused the build of" in plain and "cell" not in plain
    assert project.run_count() == 2


def test_an_entry_whose_files_are_gone_is_not_reused(project: Project) -> None:
    first = project.build()
    entry = build_cache.BuildCache(Path(os.environ["NB2SVC_CACHE_DIR"]) / "builds", project.notebook.resolve())
    assert first.cache_key is not None and entry.find(first.cache_key) is not None
    kept = entry.folder / first.cache_key / "service" / "artifacts" / "predict.pkl"
    content = kept.read_bytes()
    kept.unlink()  # a cache cleaned by hand: the entry is not whole
    assert entry.find(first.cache_key) is None
    kept.write_bytes(content)
    assert entry.find(first.cache_key) is not None
    (project.folder / "data.csv").unlink()  # an input gone
    assert entry.find(first.cache_key) is None


def test_a_file_saved_while_the_build_ran_builds_again(project: Project) -> None:
    """An editor saves data.csv after the cell read it (another process: the kernel's hook does not see it):
    the build used what it read, and the next build must not take it for the new content."""
    save = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', \"open('data.csv', 'a').write('5\\\\n')\"])"
    project.write_notebook(extra="\n" + save)
    first = project.build()
    assert answer(first) == 2.0 + 3.0 + 1  # what it read: 1 and 2
    assert (project.folder / "data.csv").read_text() == "v\n1\n2\n5\n"
    second = project.build()
    assert second.reused is None and project.run_count() == 2
    assert answer(second) == 2.0 + 8.0 + 1


def test_a_symlinked_data_file_is_followed(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "shared.csv"
    outside.write_text("v\n10\n")
    (project.folder / "data.csv").unlink()
    (project.folder / "data.csv").symlink_to(outside)
    assert answer(project.build()) == 2.0 + 10.0 + 1
    assert project.build().reused is not None
    outside.write_text("v\n20\n")
    assert answer(project.build()) == 2.0 + 20.0 + 1


def test_only_the_newest_entries_of_a_notebook_are_kept(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_cache, "KEEP", 2)
    keys = [project.build(parameters={"offset": n}).cache_key for n in range(build_cache.KEEP + 2)]
    cache = build_cache.BuildCache(Path(os.environ["NB2SVC_CACHE_DIR"]) / "builds", project.notebook.resolve())
    kept = [key for key in keys if key is not None and cache.find(key) is not None]
    assert kept == keys[-build_cache.KEEP :]


NATIVE_READ = """
import ctypes
libc = ctypes.CDLL(None)  # read as a C library reads: fopen, not Python's open (the audit hook does not see it)
libc.fopen.restype = ctypes.c_void_p
libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
handle = libc.fopen(b"native.bin", b"rb")
buffer = ctypes.create_string_buffer(64)
size = libc.fread(buffer, 1, 64, handle)
libc.fclose(handle)
total += int(buffer.raw[:size])
"""


def test_a_file_read_where_python_does_not_see_it_still_builds_again(project: Project) -> None:
    """The safety net: every other file of the notebook's folder is kept with its size, time and (small) digest,
    so a data file a C library read changes the build even though no ``open`` was seen."""
    (project.folder / "native.bin").write_text("100")
    project.write_notebook(extra="\n" + NATIVE_READ)
    first = project.build()
    assert answer(first) == 2.0 + 3.0 + 1 + 100
    assert "native.bin" not in [item.path for item in first.inputs]  # not seen: checked by the net
    assert project.build().reused is not None

    (project.folder / "native.bin").write_text("200")
    assert answer(project.build()) == 2.0 + 3.0 + 1 + 200 and project.run_count() == 2

    (project.folder / "notes.md").write_text("a new file a glob could find")
    assert project.build().reused is None and project.run_count() == 3
    os.utime(project.folder / "notes.md", ns=(5, 5))  # a fresh checkout's new times, the same content
    os.utime(project.folder / "native.bin", ns=(5, 5))
    nbformat.write(new_notebook(), project.folder / "other.ipynb")  # another notebook: not this one's input
    assert project.build().reused is not None

    inside = project.build(str(project.folder.relative_to(project.folder.parent) / "model_service"))
    assert inside.service_dir.parent == project.folder  # the output in the folder is not an input
    assert project.build(str(project.folder.relative_to(project.folder.parent) / "model_service")).reused


def test_a_folder_too_big_to_check_is_not_cached_and_says_so(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_cache, "FOLDER_LIMIT", 2)
    for n in range(3):
        (project.folder / f"extra-{n}.txt").write_text(str(n))
    said: list[str] = []
    project.build(on_stage=lambda progress: said.append(progress.text) if progress.warning else None)
    assert any("its folder has more than 2 files it might read" in text for text in said)
    assert project.build().reused is None and project.run_count() == 2


def test_a_kernel_started_by_a_wrapper_script_is_keyed_by_the_script_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking a wrapper for its Python would start a kernel: the key takes the script's digest instead."""
    ran = tmp_path / "ran"
    script = tmp_path / "kernel.sh"
    script.write_text(f"#!/bin/sh\ntouch {ran}\n")
    script.chmod(0o755)
    spec = tmp_path / "jupyter" / "kernels" / "wrapped"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [str(script), "{connection_file}"], "display_name": "w"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    before = build_cache.kernel_environment("wrapped")
    script.write_text(f"#!/bin/sh\ntouch {ran}\nexec true\n")
    after = build_cache.kernel_environment("wrapped")
    assert before is not None and after is not None and before["command"] != after["command"]
    assert not ran.exists()
