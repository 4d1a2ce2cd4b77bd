"""Observed requirements and the lock, against the real package index (uv by default, pip-compile on request)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import nb2svc
from nb2svc.capture import Capture, Distribution
from nb2svc.cli import cli
from nb2svc.locking import LockOptions
from nb2svc.observe import IMPORTED_BY_THE_NOTEBOOK, observe_requirements
from nb2svc.requirements import RUNTIME_DISTRIBUTIONS, format_requirements_in, gather_requirements
from nb2svc.runtime.manifest import RequirementReason, read_manifest

from helpers import FIXTURES, make_service

LR = FIXTURES / "linear_regression.ipynb"
CAPTURE = Capture(
    endpoints=(),
    python_version="3.11.7",
    python_implementation="cpython",
    python_executable="python",
    cloudpickle_version="3.1.3",
    notebook_distributions=(),
)


def closure(*names: str) -> set[str]:
    """The distributions ``names`` need, read from the installed metadata (markers evaluated, no extras)."""
    found: set[str] = set()
    pending = list(names)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        found.add(name)
        for spec in distribution(name).requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.network
def test_pandas_and_scikit_learn_lock_their_closure_the_runtime_and_only_what_was_observed(tmp_path: Path) -> None:
    result = nb2svc.build(FIXTURES / "house_prices.ipynb", tmp_path / "service")
    named = {"pandas", "scikit-learn", "cloudpickle", *RUNTIME_DISTRIBUTIONS}
    requirements = {canonicalize_name(r.name): r.reasons for r in result.requirements}
    assert named <= set(requirements)
    for extra in set(requirements) - named:  # e.g. psutil, which joblib imports when it is there: observed, not guessed
        assert {reason.source for reason in requirements[extra]} <= {"artifact_load", "notebook", "example_call"}
    assert set(result.lock.pins) == closure(*requirements)  # exactly the requirements and their closure
    assert "jsonschema" not in result.lock.pins  # imported only by a `skip` cell
    assert not {"ipykernel", "ipython", "nbclient"} & set(result.lock.pins)


@pytest.mark.network
def test_the_lock_carries_uvloop_httptools_and_orjson_with_hashes(tmp_path: Path) -> None:
    nb2svc.build(LR, tmp_path / "service")
    lock = (tmp_path / "service" / "requirements.txt").read_text()
    for name in ("uvloop", "httptools", "orjson"):
        pinned = rf"^{name}=={re.escape(version(name))} \\\n(?:    --hash=sha256:[0-9a-f]{{64}}(?: \\)?\n)+"
        assert re.search(pinned, lock, re.MULTILINE), name
    assert "uvicorn[standard]" not in lock and "watchfiles" not in lock  # only the fast parts, not the extras


def test_the_fast_parts_are_left_out_where_the_builder_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = version

    def without_uvloop(name: str) -> str:
        if name == "uvloop":  # as on Windows
            raise PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr("importlib.metadata.version", without_uvloop)
    specs = [requirement.spec for requirement in gather_requirements(CAPTURE, {})]
    assert f"httptools=={version('httptools')}" in specs and f"orjson=={version('orjson')}" in specs
    assert not [spec for spec in specs if spec.startswith("uvloop")]


def double(x):
    return x * 2


def test_orjson_is_not_the_notebooks_when_the_runtime_loaded_it_in_the_kernel(tmp_path: Path) -> None:
    # The kernel records the notebook's calls with the runtime's encoding, which imports orjson there (after the
    # kernel's snapshot of its modules, where jupyter_client has not loaded it already): the service's need.
    service = make_service(tmp_path, runnable=True, double=double)
    seen = (Distribution("orjson", version("orjson"), ("orjson",)), Distribution("attrs", version("attrs"), ("attrs",)))
    capture = dataclasses.replace(
        CAPTURE,
        endpoints=read_manifest(service).endpoints,
        python_executable=sys.executable,
        notebook_distributions=seen,
    )
    observed = observe_requirements(capture, service)
    assert [d.name for d in observed[IMPORTED_BY_THE_NOTEBOOK]] == ["attrs"]
    [orjson] = [r for r in gather_requirements(capture, observed) if r.name == "orjson"]
    assert orjson.reasons == (RequirementReason("runtime", "the service runtime"),)


@pytest.mark.network
def test_import_made_only_inside_the_endpoint_is_found(tmp_path: Path) -> None:
    result = nb2svc.build(FIXTURES / "import_inside_endpoint.ipynb", tmp_path / "service")
    [attrs] = [r for r in result.requirements if r.name == "attrs"]
    assert attrs.reasons == (RequirementReason("import_statement", "an import statement in label (attrs)"),)
    assert "attrs" in result.lock.pins


@pytest.mark.network
def test_a_rebuild_with_the_same_pins_takes_the_lock_from_the_cache(tmp_path: Path) -> None:
    options = LockOptions(cache_dir=tmp_path / "cache")
    cold = nb2svc.build(LR, tmp_path / "first", lock_options=options)
    warm = nb2svc.build(LR, tmp_path / "second", lock_options=options)
    assert (cold.lock.cached, warm.lock.cached) == (False, True)
    assert cold.lock.tool == warm.lock.tool == f"uv pip compile {version('uv')}"  # the default resolver
    assert (tmp_path / "first" / "requirements.txt").read_text() == (
        tmp_path / "second" / "requirements.txt"
    ).read_text()
    assert len(list((tmp_path / "cache").iterdir())) == 1


@pytest.mark.network
def test_python_package_overrides_and_adds(tmp_path: Path) -> None:
    result = run(
        "build",
        str(LR),
        "-o",
        str(tmp_path / "out"),
        "--python-package",
        "scikit-learn>=1.0",
        "--python-package",
        "attrs",
        "--json",
    )
    assert result.exit_code == 0, result.output
    requirements = {r["name"]: r for r in json.loads(result.stdout)["requirements"]}
    assert requirements["scikit-learn"] == {
        "name": "scikit-learn",
        "spec": "scikit-learn>=1.0",
        "reasons": [{"source": "user", "text": "--python-package"}],
    }
    assert requirements["attrs"]["spec"] == "attrs"
    assert "attrs" in json.loads(result.stdout)["lock"]["pins"]


@pytest.mark.network
def test_requirements_file_replaces_what_was_observed(tmp_path: Path) -> None:
    file = tmp_path / "mine.txt"
    file.write_text("# the packages I want\nscikit-learn\n")
    result = run("build", str(LR), "-o", str(tmp_path / "out"), "--requirements", str(file), "--json")
    assert result.exit_code == 0, result.output
    specs = {r["spec"]: r["reasons"] for r in json.loads(result.stdout)["requirements"]}
    assert specs.pop("scikit-learn") == [{"source": "user", "text": "--requirements"}]
    assert {spec.split("==")[0] for spec in specs} == {"cloudpickle", *RUNTIME_DISTRIBUTIONS}


def test_offline_lock_pins_the_installed_closure_without_hashes(tmp_path: Path) -> None:
    result = run("build", str(LR), "-o", str(tmp_path / "out"), "--offline", "--resolver", "pip-compile")
    assert result.exit_code == 0, result.output
    assert "WITHOUT HASHES (offline: no resolver was run)" in result.stderr
    assert re.search(
        r"  scikit-learn==[\d.]+ +imported by the notebook \(sklearn\); loading my_lr_deployement", result.stderr
    )
    lock = (tmp_path / "out" / "requirements.txt").read_text()
    assert "OFFLINE LOCK" in lock and "--hash" not in lock
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["lock"]["hashes"] is False and manifest["lock"]["offline"] is True
    assert manifest["lock"]["tool"] == "installed metadata (offline)"  # --offline wins over --resolver
    assert closure("scikit-learn", "cloudpickle", *RUNTIME_DISTRIBUTIONS) <= set(manifest["lock"]["pins"])
    assert "pip install -r requirements.txt" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.network
@pytest.mark.parametrize("resolver", ["uv", "pip-compile"])
def test_a_distribution_the_index_does_not_have(tmp_path: Path, resolver: str) -> None:
    notebook = FIXTURES / "private_package" / "uses_private_package.ipynb"
    result = run("build", str(notebook), "-o", str(tmp_path / "out"), "--resolver", resolver)
    assert result.exit_code == 9, result.output
    message = result.stderr
    assert "nb2svc-private-fixture==1.0 is not on the package index" in message
    assert "imported by the notebook (nb2svc_private_fixture)" in message
    for way_out in ("--python-package", "--extra-index-url", "--offline"):
        assert way_out in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
@pytest.mark.parametrize("resolver", ["uv", "pip-compile"])
def test_a_conflict_names_the_conflicting_packages(tmp_path: Path, resolver: str) -> None:
    result = run(
        "build", str(LR), "-o", str(tmp_path / "out"), "--python-package", "numpy==1.21.0", "--resolver", resolver
    )
    assert result.exit_code == 11, result.output
    assert "cannot be installed together" in result.stderr
    assert "  numpy==1.21.0 (--python-package)\n" in result.stderr
    # pip-compile names the parent's release ("scikit-learn 1.9.1"),
    # uv the releases it ruled out ("scikit-learn>=1.9.1")
    assert re.search(r"  numpy[<>=!]=?[\d.]+.* \(required by [a-z-]+(?: |>=)[\d.]+\)", result.stderr)
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("resolver", ["uv", "pip-compile"])
def test_an_unreachable_index_suggests_offline(tmp_path: Path, resolver: str) -> None:
    # Only the given index: no pip or uv configuration of this machine's may add another.
    env = {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "UV_NO_CONFIG": "1"}
    result = run(
        "build",
        str(LR),
        "-o",
        str(tmp_path / "out"),
        "--index-url",
        "http://127.0.0.1:9/simple",
        "--resolver",
        resolver,
        env=env,
    )
    assert result.exit_code == 12, result.output
    assert "could not reach http://127.0.0.1:9/simple" in result.stderr
    assert "--offline" in result.stderr


@pytest.mark.network
def test_the_resolver_is_chosen_by_option_or_environment(tmp_path: Path) -> None:
    default = run("build", str(LR), "-o", str(tmp_path / "uv"), "--json")
    chosen = run("build", str(LR), "-o", str(tmp_path / "pip"), "--json", env={"NB2SVC_BUILD_RESOLVER": "pip-compile"})
    assert (default.exit_code, chosen.exit_code) == (0, 0), default.output + chosen.output
    uv_lock, pip_compile_lock = (json.loads(result.stdout)["lock"] for result in (default, chosen))
    assert uv_lock["tool"] == f"uv pip compile {version('uv')}"
    assert pip_compile_lock["tool"] == f"pip-compile {version('pip-tools')}"
    header = (
        f"# Locked by nb2svc with pip-compile {version('pip-tools')} for Python {pip_compile_lock['python_version']}.\n"
    )
    assert (tmp_path / "pip" / "requirements.txt").read_text().startswith(header)
    assert pip_compile_lock["pins"] == uv_lock["pins"]


def test_an_unknown_resolver_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = run("build", str(LR), "-o", str(tmp_path / "out"), "--resolver", "poetry")
    assert result.exit_code == 2
    assert "'poetry' is not one of 'uv', 'pip-compile'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_python_version_that_cannot_be_served_is_refused(tmp_path: Path) -> None:
    older = run("build", str(LR), "-o", str(tmp_path / "out"), "--python-version", "3.9")
    assert older.exit_code == 2
    assert "--python-version 3.9: nb2svc's service runtime runs on Python 3.10 and later" in older.stderr
    malformed = run("build", str(LR), "-o", str(tmp_path / "out"), "--python-version", "py3.12")
    assert malformed.exit_code == 2 and "--python-version 'py3.12' is not X.Y (e.g. 3.12)" in malformed.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
def test_example_option_records_more_examples(tmp_path: Path) -> None:
    result = run(
        "build",
        str(FIXTURES / "house_prices.ipynb"),
        "-o",
        str(tmp_path / "out"),
        "--example",
        "predict_price",
        '{"rooms": 4, "area": 100}',
        "--example",
        "predict_price",
        '[["a", 1, 30], ["b", 5, 130]]',
    )
    assert result.exit_code == 0, result.output
    [endpoint] = json.loads((tmp_path / "out" / "manifest.json").read_text())["endpoints"]
    added = [e for e in endpoint["examples"] if e["source"] == "command line"]
    assert [e["request"] for e in added] == [
        {"data": {"rooms": 4, "area": 100}},
        {"data": [["a", 1, 30], ["b", 5, 130]]},
    ]
    assert [row[0] for row in added[1]["response"]["data"]] == ["a", "b"]
    assert isinstance(added[0]["response"]["data"], float)


@pytest.mark.parametrize(
    ("example", "exit_code", "message"),
    [
        (["nope", "1"], 2, "--example names no endpoint of house_prices.ipynb: nope (endpoints: predict_price)"),
        (["predict_price", "{oops"], 2, "is not JSON"),
        (["predict_price", '{"rooms": 1}'], 7, "the example {\"rooms\": 1} for endpoint 'predict_price'"),
    ],
)
def test_bad_examples(tmp_path: Path, example: list[str], exit_code: int, message: str) -> None:
    result = run("build", str(FIXTURES / "house_prices.ipynb"), "-o", str(tmp_path / "out"), "--example", *example)
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_notebooks_version_of_a_runtime_package_is_a_conflict_not_a_silent_choice() -> None:
    observed = {IMPORTED_BY_THE_NOTEBOOK: (Distribution("starlette", "0.20.0", ("starlette",)),)}
    starlette = [r for r in gather_requirements(CAPTURE, observed) if r.name == "starlette"]
    assert [r.spec for r in starlette] == [
        "starlette==0.20.0",
        f"starlette=={version('starlette')}",
    ]  # the resolver refuses both: exit 11
    assert [r.reasons for r in starlette] == [
        (RequirementReason("notebook", "imported by the notebook (starlette)"),),
        (RequirementReason("runtime", "the service runtime"),),
    ]


def test_every_reason_says_who_asked_and_requirements_in_keeps_the_words() -> None:
    observed = {
        IMPORTED_BY_THE_NOTEBOOK: (Distribution("scikit-learn", "1.9.1", ("sklearn",)),),
        RequirementReason("artifact_load", "loading predict"): (Distribution("scikit-learn", "1.9.1", ("sklearn",)),),
    }
    requirements = gather_requirements(CAPTURE, observed, python_packages=["attrs>=23"])
    reasons = {r.name: r.reasons for r in requirements}
    assert reasons["scikit-learn"] == (
        RequirementReason("notebook", "imported by the notebook (sklearn)"),
        RequirementReason("artifact_load", "loading predict (sklearn)"),
    )
    assert reasons["cloudpickle"] == (RequirementReason("runtime", "serialized the artifacts"),)
    assert reasons["uvicorn"] == (RequirementReason("runtime", "the service runtime"),)
    assert reasons["attrs"] == (RequirementReason("user", "--python-package"),)
    assert "scikit-learn==1.9.1\n    # imported by the notebook (sklearn)\n    # loading predict (sklearn)\n" in (
        format_requirements_in(requirements)
    )
    [mine] = [r for r in gather_requirements(CAPTURE, {}, requirements_file="attrs\n") if r.name == "attrs"]
    assert mine.reasons == (RequirementReason("user", "--requirements"),)
