"""nb2svc build --python-version X.Y for another Python than the kernel's: the notebook runs again in X.Y, and
every example the training kernel recorded must answer the same there (parity)."""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from packaging.version import Version

from nb2svc.cli import cli
from nb2svc.interpreters import find_interpreter
from nb2svc.runtime.manifest import read_manifest

from helpers import FIXTURES

pytestmark = [pytest.mark.e2e, pytest.mark.network]  # interpreters of this machine; the index for packages
KERNEL = f"{sys.version_info.major}.{sys.version_info.minor}"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("target", ["3.10", "3.12"])
def test_the_example_notebook_built_for_another_python_serves_there_as_trained(tmp_path: Path, target: str) -> None:
    assert target != KERNEL
    service = tmp_path / "service"
    notebook = str(FIXTURES / "linear_regression.ipynb")
    # 3.12 has the training versions; 3.10 has no numpy 2.3 or later, nor scikit-learn 1.8: the resolver picks
    allowed = ["--allow-other-versions"] if target == "3.10" else []
    built = run("build", notebook, "-o", str(service), "--python-version", target, *allowed, "--json", "--no-cache")
    assert built.exit_code == 0, built.output
    stages = [  # each said as it starts, in this order, on stderr
        "starting the kernel python3…",
        f"making an environment of Python {target}.",
        f"running the notebook again in Python {target}.",
        "starting the kernel nb2svc-target-python…",
        f"checking the examples answer the same in Python {target}.",
        "observing what the artifacts import…",
        "locking ",
        "rendering…",
    ]
    at = [built.stderr.find(stage) for stage in stages]
    assert -1 not in at and at == sorted(at), built.stderr
    report = json.loads(built.stdout)["retarget"]
    assert report["trained_python"].startswith(f"{KERNEL}.") and report["python"].startswith(f"{target}.")
    assert report["parity"] == [{"endpoint": "my_lr_deployement", "number": 1, "same": True}]
    assert report["environment_seconds"] >= 0 and report["rerun_seconds"] > 0
    manifest = read_manifest(service)
    assert (manifest.python.minor, manifest.lock.python_version) == (target, target)
    assert manifest.retarget is not None and manifest.retarget.trained_python == report["trained_python"]
    assert manifest.retarget.examples_compared == 1
    changed = {name: (c.trained, c.chosen) for name, c in manifest.retarget.changed_versions.items()}
    if target == "3.12":
        assert changed == {}
        assert manifest.lock.pins["numpy"] == version("numpy")  # the training version, served
    else:
        assert changed["numpy"][0] == version("numpy") and changed["numpy"][1] == manifest.lock.pins["numpy"]
        assert Version(changed["numpy"][1]) < Version("2.3")
    verified = run("verify", str(service), "--json")  # a fresh environment of that Python, from the lock alone
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["python"] == target


@pytest.mark.parametrize("chosen", [("--python-version", "3.12"), ("--python", "")])
def test_an_answer_that_depends_on_the_python_fails_parity_naming_the_example(
    tmp_path: Path, chosen: tuple[str, str]
) -> None:
    option, value = chosen[0], chosen[1] or find_interpreter("3.12").path  # --python alone: serve on its Python
    notebook = str(FIXTURES / "python_dependent.ipynb")
    built = run("build", notebook, "-o", str(tmp_path / "out"), option, value, "--json")
    assert built.exit_code == 18, built.output
    error = json.loads(built.stdout)["error"]
    assert error["type"] == "parity_failed"
    assert 'scaled example 1 ({"data": 2})' in error["message"]
    assert f"data: expected {2 * sys.version_info.minor}, got 24" in error["message"]
    assert error["examples"] == [
        {"endpoint": "scaled", "number": 1, "difference": f"data: expected {2 * sys.version_info.minor}, got 24"}
    ]
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_python_that_is_not_installed_is_named_with_those_that_are(tmp_path: Path) -> None:
    built = run(
        "build",
        str(FIXTURES / "python_dependent.ipynb"),
        "-o",
        str(tmp_path / "out"),
        "--python-version",
        "3.5",
        "--json",
    )
    assert built.exit_code == 16, built.output
    message = json.loads(built.stdout)["error"]["message"]
    assert message.startswith("no Python 3.5 interpreter is installed here (found: ")
    assert f"{KERNEL}." in message and "pyenv install 3.5" in message and "--python PATH" in message


def test_a_training_version_missing_for_the_target_python_is_named_with_the_versions_there(tmp_path: Path) -> None:
    # the builder's numpy (2.3 and later) has no distribution for Python 3.10
    notebook = str(FIXTURES / "linear_regression.ipynb")
    built = run("build", notebook, "-o", str(tmp_path / "out"), "--python-version", "3.10", "--json")
    assert built.exit_code == 17, built.output
    error = json.loads(built.stdout)["error"]
    numpy = error["packages"]["numpy"]
    assert numpy["trained"] == version("numpy")
    assert numpy["available"] and all(Version(v) < Version("2.3") for v in numpy["available"])
    assert f"numpy=={version('numpy')}: for Python 3.10 there is {', '.join(numpy['available'])}" in error["message"]
    assert "--allow-other-versions" in error["message"]
    assert not (tmp_path / "out").exists()
