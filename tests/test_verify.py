"""`nb2svc verify`: a fresh environment from the lock alone, the service on a real port, the examples replayed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import nb2svc
from nb2svc.cli import cli
from nb2svc.runtime.compare import compare

from helpers import FIXTURES, kernel_processes

pytestmark = pytest.mark.e2e


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("verify") / "lr_service"
    nb2svc.build(FIXTURES / "linear_regression.ipynb", output, examples={"my_lr_deployement": [[[1, 3], [2, "x"]]]})
    return output


@pytest.fixture
def copy(service: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(service, tmp_path / "service"))


def test_verify_replays_the_examples_from_a_fresh_environment(service: Path) -> None:
    result = run("verify", str(service))
    assert result.exit_code == 0, result.output
    assert 'ok   my_lr_deployement #1 {"data": 3}' in result.stderr
    assert 'ok   my_lr_deployement #2 {"data": [[1, 3], [2, "x"]]}' in result.stderr
    assert "verified: 2 examples answered as in the training kernel" in result.stderr


def test_build_with_verify_and_deploy_publishes_a_verified_version(tmp_path: Path) -> None:
    registry = str(tmp_path / "registry")
    notebook = str(FIXTURES / "linear_regression.ipynb")
    output = str(tmp_path / "out")
    result = run("build", notebook, "-o", output, "--verify", "--deploy", "--registry", registry, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verify"]["ok"] is True
    assert [e["passed"] for e in report["verify"]["examples"]] == [True]
    assert [(d["name"], d["version"]) for d in report["deployments"]] == [("my_lr_deployement", 1)]
    listed = json.loads(run("deployments", "--registry", registry, "--json").stdout)
    [version] = listed["deployments"][0]["versions"]
    assert version["verified"]["ok"] is True
    assert "verified 20" in run("deployments", "--registry", registry).stdout


def test_a_changed_answer_fails_with_the_difference(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["endpoints"][0]["examples"][0]["response"]["data"] += 0.5
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run("verify", str(copy), "--json")
    assert result.exit_code == 13
    assert json.loads((copy / "verified.json").read_text())["ok"] is False  # `nb2svc deployments` says FAILED
    message = json.loads(result.stdout)["error"]["message"]
    assert message.startswith("the service installed from the lock is not ready: example 1 of my_lr_deployement")
    assert re.search(r"data: expected 12\.908\d*, got 12\.408\d*", message)


def test_a_tampered_hash_fails_the_install(copy: Path) -> None:
    lock = (copy / "requirements.txt").read_text()
    starlette = re.search(r"^starlette==.*?(?=^\S)", lock, re.M | re.S)  # its pin and every hash of it
    assert starlette, lock
    block = starlette.group(0)
    tampered = lock.replace(block, re.sub(r"sha256:[0-9a-f]{4}", "sha256:0000", block))
    assert tampered != lock
    (copy / "requirements.txt").write_text(tampered)
    result = run("verify", str(copy))
    assert result.exit_code == 14, result.output
    assert "installing requirements.txt failed" in result.stderr
    assert "hash" in result.stderr.lower()


def test_a_changed_pin_fails_the_install(copy: Path) -> None:
    lock = (copy / "requirements.txt").read_text()
    tampered = re.sub(r"^idna==\S+", "idna==3.6", lock, flags=re.M)
    assert tampered != lock
    (copy / "requirements.txt").write_text(tampered)
    result = run("verify", str(copy))
    assert result.exit_code == 14, result.output
    assert "hash" in result.stderr.lower()


def test_a_service_without_examples_still_installs_and_starts(tmp_path: Path) -> None:
    nb2svc.build(FIXTURES / "import_inside_endpoint.ipynb", tmp_path / "out")
    result = run("verify", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "no examples were recorded" in result.stderr
    assert kernel_processes() == []


@pytest.mark.parametrize(
    ("expected", "actual", "difference"),
    [
        (1.0, 1.0 + 1e-9, None),
        (12.40878787878788, 12.408787878787882, None),
        (3, 3.0, None),
        (1.0, 1.01, "the answer: expected 1.0, got 1.01"),
        (1, 2, "the answer: expected 1, got 2"),
        (True, 1, "the answer: expected True, got 1"),
        ("a", "a", None),
        ({"data": [[1, 2.0]]}, {"data": [[1, 2.5]]}, "data[0][1]: expected 2.0, got 2.5"),
        ({"data": [1]}, {"data": [1, 2]}, "data: expected 1 items, got 2"),
        ({"data": 1}, {"error": {}}, "the answer: expected keys ['data'], got ['error']"),
        (None, 0, "the answer: expected None, got 0"),
    ],
)
def test_compare(expected: object, actual: object, difference: str | None) -> None:
    assert compare(expected, actual) == difference


def test_verify_compares_the_examples_recorded_from_numpy_calls(tmp_path: Path) -> None:
    nb2svc.build(FIXTURES / "numpy_calls.ipynb", tmp_path / "service")
    result = run("verify", str(tmp_path / "service"))
    assert result.exit_code == 0, result.output
    assert 'ok   score_features #3 {"data": {"a": 7.5, "b": 8.0, "c": 9.25}}' in result.stderr
    assert "verified: 6 examples answered as in the training kernel" in result.stderr


def test_verify_with_nothing_recorded_says_which_calls_and_why(tmp_path: Path) -> None:
    nb2svc.build(FIXTURES / "unrecordable_calls.ipynb", tmp_path / "service")
    result = run("verify", str(tmp_path / "service"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == [] and report["calls_seen"] == 2
    assert report["unrecorded"] == [
        "norm: argument 'row' is a numpy array, and the service would pass a list: annotate it numpy.ndarray"
    ]
    text = run("verify", str(tmp_path / "service")).stderr
    assert "the notebook called its endpoints 2 times and no call could be recorded as a request" in text
    assert "Call the endpoint in a notebook cell" not in text
