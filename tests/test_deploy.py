"""nb2svc.deploy(fn) from a plain Python script, and nb2svc build --deploy: versions published into a registry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner

import nb2svc
from nb2svc.cli import cli
from nb2svc.errors import UsageError
from nb2svc.local_server import registry_server
from nb2svc.registry import Registry
from nb2svc.runtime.invoke import answer
from nb2svc.runtime.load import LoadedService, load_service
from nb2svc.runtime.manifest import read_manifest
from nb2svc.server_process import running_server

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

TRAIN = """
import json, sys
import cloudpickle
import nb2svc
from sklearn.linear_model import LinearRegression
from features import row  # a module of the user's, beside the script

model = LinearRegression().fit([[1, 2], [2, 3], [3, 5]], [3, 5, 8])

def predict(a: float, b: float) -> float:
    return float(model.predict(row(a, b))[0])
"""


def run_script(tmp_path: Path, body: str) -> Any:
    """Run ``TRAIN`` then ``body`` as a script in ``tmp_path``; what it printed last, as JSON."""
    (tmp_path / "features.py").write_text("def row(a, b):\n    return [[a, b]]\n")
    script = tmp_path / "train.py"
    script.write_text(TRAIN + textwrap.dedent(body))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.network  # the lock is resolved against the package index
def test_deploy_from_a_script_publishes_numbered_versions(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    printed = run_script(
        tmp_path,
        f"""
        first = nb2svc.deploy(predict, registry={str(registry)!r}, serve=False, examples=[[1, 2], {{"a": 3, "b": 5}}])
        model.fit([[1, 2], [2, 3], [3, 5]], [30, 50, 80])  # trained again: the next version answers otherwise
        second = nb2svc.deploy(
            predict, registry={str(registry)!r}, serve=False, python_packages=["scikit-learn>=1.0", "attrs"]
        )
        by_value = sorted(cloudpickle.list_registry_pickle_by_value())
        print(json.dumps([first.to_dict(), second.to_dict(), str(second), by_value]))
        """,
    )
    first, second, said, by_value = printed
    assert by_value == []  # the session pickles as before: features was by value only while deploy ran
    assert (first["name"], first["version"], second["version"]) == ("predict", 1, 2)
    assert "Deployed predict version 2" in said and "nb2svc serve --registry" in said  # not served: says how
    one, two = (read_manifest(registry / "predict" / n) for n in ("1", "2"))
    assert (one.source, one.notebook.file, one.endpoints[0].name, one.endpoints[0].cell) == (
        "deploy",
        "train.py",
        "predict",
        0,
    )
    assert [e.request for e in one.endpoints[0].examples] == [{"data": [1, 2]}, {"data": {"a": 3, "b": 5}}]
    assert one.endpoints[0].examples[0].response["data"] == pytest.approx(3.0)
    assert {e.source for e in one.endpoints[0].examples} == {"deploy"}
    assert one.version != two.version  # another model, another digest
    observed = {r.name: {reason.source for reason in r.reasons} for r in one.requirements}
    assert observed["scikit-learn"] == {"artifact_load"}  # what loading the function needs, observed
    overridden = {r.name: r for r in two.requirements}
    assert overridden["scikit-learn"].spec == "scikit-learn>=1.0"
    assert [(reason.source, reason.text) for reason in overridden["scikit-learn"].reasons] == [
        ("user", "python_packages")
    ]
    assert "attrs" in two.lock.pins
    # each version is an ordinary service directory: it loads (features travelled inside it), replays its examples
    # and answers as trained
    loaded = [load_service(registry / "predict" / n) for n in ("1", "2")]
    assert all(isinstance(service, LoadedService) for service in loaded)
    answers = [answer(s.endpoints[0].invoker, [1, 2])["data"] for s in loaded if isinstance(s, LoadedService)]
    assert answers == [pytest.approx(3.0), pytest.approx(30.0)]
    listed = CliRunner().invoke(cli, ["deployments", "--registry", str(registry), "--json"])
    versions = json.loads(listed.stdout)["deployments"][0]["versions"]
    assert [(v["version"], v["source"], v["notebook"], v["verified"]) for v in versions] == [
        (1, "deploy", "train.py", None),
        (2, "deploy", "train.py", None),
    ]


def test_an_unpicklable_reference_is_named_and_nothing_is_published(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    printed = run_script(
        tmp_path,
        f"""
        import threading
        guard = threading.Lock()

        def guarded(a: float, b: float) -> float:
            with guard:
                return predict(a, b)

        try:
            nb2svc.deploy(guarded, registry={str(registry)!r}, serve=False)
        except nb2svc.Nb2svcError as exc:
            print(json.dumps(exc.to_dict()))
        """,
    )
    assert printed["type"] == "capture_failed" and printed["exit_code"] == 7
    assert printed["variable"] == "guard"
    assert "the function deployed as 'guarded' cannot be serialized: it references 'guard'" in printed["message"]
    assert Registry(registry).numbers("guarded") == []
    assert not (registry / "guarded").exists()  # no staging directory, no empty deployment left behind


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"name": "my-model"}, "must be letters, digits and underscores only"),
        ({"python_version": "3.5"}, "python_version='3.5' differs from this Python"),
        ({"python_version": 3.10}, "python_version is a string such as"),
        ({"examples": {"data": [1, 2]}}, "examples is a list of values of data"),
        ({"python_packages": "scikit-learn"}, "python_packages is a list of requirements"),
        ({"parameters": {"alpha": 0.5}}, "no notebook runs, so there are no parameters to inject"),
    ],
)
def test_deploy_refuses_bad_arguments_before_any_work(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        nb2svc.deploy(len, registry=tmp_path, serve=False, **arguments)
    assert not any(tmp_path.iterdir())


def test_python_version_names_this_minor_with_or_without_a_patch_level(tmp_path: Path) -> None:
    for here in (f"{sys.version_info.major}.{sys.version_info.minor}", ".".join(map(str, sys.version_info[:3]))):
        with pytest.raises(UsageError, match="examples is a list"):  # checked after the version, which passed
            nb2svc.deploy(len, python_version=here, registry=tmp_path, serve=False, examples={"data": 1})  # type: ignore[arg-type]


def test_deploy_needs_a_function_with_a_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot name a deployment: pass name='my_model'"):
        nb2svc.deploy(lambda x: x, registry=tmp_path, serve=False)
    with pytest.raises(UsageError, match="takes the function that answers requests; it was given a int"):
        nb2svc.deploy(3, registry=tmp_path, serve=False)  # type: ignore[arg-type]


@pytest.mark.network  # the build locks against the package index
def test_build_deploy_publishes_each_endpoint_as_a_version(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    runner = CliRunner()
    arguments = ["build", str(FIXTURES / "batching.ipynb"), "-o", str(tmp_path / "out"), "--deploy"]
    first = runner.invoke(cli, [*arguments, "--registry", str(registry), "--json"])
    assert first.exit_code == 0, first.output
    assert [(d["name"], d["version"]) for d in json.loads(first.stdout)["deployments"]] == [
        ("predict_many", 1),
        ("score_rows", 1),
    ]
    again = runner.invoke(cli, [*arguments, "--force", "--registry", str(registry)])
    assert again.exit_code == 0, again.output
    assert "deployed predict_many version 2" in again.stderr
    version = registry / "predict_many" / "2"
    manifest = read_manifest(version)
    assert [e.name for e in manifest.endpoints] == ["predict_many"]  # a service of its own
    assert sorted(p.name for p in (version / "artifacts").iterdir()) == ["predict_many.pkl"]
    assert (version / "requirements.txt").read_text() == (tmp_path / "out" / "requirements.txt").read_text()
    loaded = load_service(version)  # loads and replays the notebook's own calls of it
    assert isinstance(loaded, LoadedService), loaded
    assert answer(loaded.endpoints[0].invoker, 4.0)["data"] == manifest.endpoints[0].examples[-1].response["data"]


@pytest.mark.network  # the build locks against the package index
def test_a_notebook_that_deploys_publishes_nothing_when_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = tmp_path / "registry"
    monkeypatch.setenv("NB2SVC_REGISTRY", str(registry))  # the kernel inherits it
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import nb2svc"),
            nbformat.v4.new_code_cell(
                "def double(x: float) -> float:\n    return 2 * x", metadata={"tags": ["predict"]}
            ),
            nbformat.v4.new_code_cell("deployed = nb2svc.deploy(double)\nassert deployed is None\ndouble(4.0)"),
        ]
    )
    path = tmp_path / "deploys.ipynb"
    nbformat.write(notebook, path)
    result = nb2svc.build(path, tmp_path / "out")
    assert [e.name for e in result.manifest.endpoints] == ["double"]
    assert not registry.exists()  # the build had no side effect


@pytest.mark.e2e
def test_deploy_refuses_a_server_of_another_registry_or_no_registry(tmp_path: Path, unused_tcp_port: int) -> None:
    other = tmp_path / "other"
    address = f"127.0.0.1:{unused_tcp_port}"
    command = [sys.executable, "-m", "nb2svc", "serve", "--registry", str(other), "--port", str(unused_tcp_port)]
    with running_server(command, unused_tcp_port):
        with pytest.raises(UsageError, match=f"serves the registry {other}, not {tmp_path / 'mine'}: deploy into"):
            registry_server(tmp_path / "mine", address)
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        registry_server(tmp_path / "mine", "nonsense")
