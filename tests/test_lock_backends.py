"""The lock backends one by one.

Each turns its own resolver's failures into nb2svc's errors; uv and pip-compile agree.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

from nb2svc.errors import IndexUnreachable, LockConflict, Nb2svcError, PackageNotOnIndex, UsageError
from nb2svc.locking import RESOLVERS, LockOptions, choose_backend, lock_requirements
from nb2svc.locking.failures import Demand
from nb2svc.locking.offline import OfflineBackend
from nb2svc.locking.pip_compile import PipCompileBackend, resolver_report
from nb2svc.locking.uv import UvBackend, conflict_demands
from nb2svc.requirements import RUNTIME_DISTRIBUTIONS, format_requirements_in
from nb2svc.runtime.manifest import ReasonSource, RequirementEntry, RequirementReason

SAMPLES = Path(__file__).resolve().parent / "resolver_output"  # what each resolver printed, captured from real runs
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def entry(spec: str, source: ReasonSource, text: str) -> RequirementEntry:
    return RequirementEntry(re.split(r"[<>=!~ ]", spec, maxsplit=1)[0], spec, (RequirementReason(source, text),))


# The requirements each sample was captured with (tests/resolver_output/<resolver>-<kind>.txt).
FAILURES = {
    "conflict": (
        (entry("numpy==1.21.0", "user", "--python-package"),
         entry("pandas==3.1.1", "notebook", "imported by the notebook (pandas)")),
        LockOptions(),
    ),
    "not-found": (
        (entry("nb2svc-no-such-package==1.0", "notebook", "imported by the notebook (nb2svc_no_such_package)"),
         entry("starlette==1.10.0", "runtime", "the service runtime")),
        LockOptions(),
    ),
    "unreachable": ((entry("starlette==1.10.0", "runtime", "the service runtime"),), LockOptions(index_url="http://127.0.0.1:9/simple")),
}  # fmt: skip


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text(encoding="utf-8")


def assert_explains(kind: str, error: Nb2svcError) -> None:
    """The error a failure of ``kind`` (with FAILURES' requirements) must be: what, which package, why, the ways out."""
    message = error.message
    assert "Traceback" not in message and 'File "' not in message
    if kind == "conflict":
        assert isinstance(error, LockConflict)
        assert "cannot be installed together" in message
        assert "  numpy==1.21.0 (--python-package)\n" in message
        # pip-compile names the parent's release ("pandas 3.1.1"), uv the releases it ruled out ("pandas>=3.1.1")
        assert re.search(r"  numpy>=2\.0\.2.* \(required by pandas(?: |>=)3\.1\.1\)\n", message)
    elif kind == "not-found":
        assert isinstance(error, PackageNotOnIndex)
        assert message.startswith(
            "nb2svc-no-such-package==1.0 is not on the package index "
            "(imported by the notebook (nb2svc_no_such_package))"
        )
        assert all(way_out in message for way_out in ("--python-package", "--extra-index-url", "--offline"))
        assert error.to_dict()["reasons"] == [
            {"source": "notebook", "text": "imported by the notebook (nb2svc_no_such_package)"}
        ]
    else:
        assert isinstance(error, IndexUnreachable)
        assert message.startswith("could not reach http://127.0.0.1:9/simple to lock the requirements:\n")
        assert "Connection refused" in message and "--offline" in message


def hashed_pins(requirements_txt: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Each package of a requirements.txt: its version, and the set of its hashes."""
    blocks = re.findall(r"^(\S+)==(\S+)((?: \\\n +--hash=sha256:[0-9a-f]{64})+)", requirements_txt, re.MULTILINE)
    return {name: (pinned, frozenset(re.findall(r"sha256:([0-9a-f]{64})", hashes))) for name, pinned, hashes in blocks}


@pytest.fixture
def only_the_package_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pip or uv configuration of this machine's may add another index or a folder of wheels."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("UV_NO_CONFIG", "1")


def test_pip_compile_reads_who_asks_for_what_in_pips_resolver_report() -> None:
    assert resolver_report(sample("pip-compile-conflict")) == (
        Demand("numpy==1.21.0", None),
        Demand('numpy>=2.0.2; python_version < "3.14"', "pandas 3.1.1"),
    )


def test_uv_reads_who_asks_for_what_in_its_explanation() -> None:
    assert conflict_demands(sample("uv-conflict")) == (
        Demand("numpy>=2.0.2", "pandas>=3.1.1"),  # its marker ({python_full_version < '3.14'}) left out
        Demand("numpy==1.21.0", None),
        Demand("pandas==3.1.1", None),
    )
    assert conflict_demands(sample("uv-conflict-two-versions")) == (
        Demand("starlette==0.20.0", None),
        Demand("starlette==1.10.0", None),
    )


@pytest.mark.parametrize("kind", list(FAILURES))
@pytest.mark.parametrize("resolver", list(RESOLVERS))
def test_each_backend_turns_its_captured_failures_into_nb2svc_errors(resolver: str, kind: str) -> None:
    requirements, options = FAILURES[kind]
    backend = RESOLVERS[resolver](PYTHON, options)
    assert_explains(
        kind, backend.failure(sample(f"{resolver}-{kind}"), format_requirements_in(requirements), requirements)
    )


def test_two_versions_of_one_package_are_each_named_with_their_reason() -> None:
    requirements = (
        entry("starlette==0.20.0", "notebook", "imported by the notebook (starlette)"),
        entry("starlette==1.10.0", "runtime", "the service runtime"),
    )
    error = UvBackend(PYTHON, LockOptions()).failure(sample("uv-conflict-two-versions"), "", requirements)
    assert error.details["conflict"] == [
        "starlette==0.20.0 (imported by the notebook (starlette))",
        "starlette==1.10.0 (the service runtime)",
    ]


def test_an_unrecognised_failure_is_shown_in_the_resolvers_own_words() -> None:
    error = UvBackend(PYTHON, LockOptions()).failure("error: the disk is full\n", "", ())
    assert isinstance(error, LockConflict)
    assert error.message == "locking the requirements failed:\nerror: the disk is full"


@pytest.mark.network
@pytest.mark.parametrize("kind", list(FAILURES))
@pytest.mark.parametrize("resolver", list(RESOLVERS))
def test_each_backend_recognises_its_resolvers_real_failures(
    resolver: str, kind: str, only_the_package_index: None
) -> None:
    requirements, options = FAILURES[kind]
    with pytest.raises(Nb2svcError) as raised:
        RESOLVERS[resolver](PYTHON, options).pin(format_requirements_in(requirements), requirements)
    assert_explains(kind, raised.value)


def test_pip_compile_refuses_to_lock_for_another_python() -> None:
    with pytest.raises(
        UsageError,
        match=rf"--resolver pip-compile locks only for the Python it runs under \({PYTHON}\), "
        r"and the service needs Python 3\.9\. Lock with --resolver uv",
    ):
        PipCompileBackend("3.9", LockOptions())


@pytest.mark.network
def test_uv_locks_for_another_python() -> None:
    requirements = (entry("numpy", "notebook", "imported by the notebook (numpy)"),)
    pins = hashed_pins(UvBackend("3.10", LockOptions()).pin(format_requirements_in(requirements), requirements))
    assert Version(pins["numpy"][0]) < Version("2.3")  # numpy 2.3 and later need Python 3.11


def test_offline_wins_over_the_resolver_and_resolvers_are_chosen_by_name() -> None:
    assert isinstance(choose_backend(LockOptions(), PYTHON, sys.executable), UvBackend)
    assert isinstance(choose_backend(LockOptions(resolver="pip-compile"), PYTHON, sys.executable), PipCompileBackend)
    assert isinstance(
        choose_backend(LockOptions(resolver="pip-compile", offline=True), "3.9", sys.executable), OfflineBackend
    )
    with pytest.raises(UsageError, match="--resolver 'poetry' is not one of uv, pip-compile"):
        choose_backend(LockOptions(resolver="poetry"), PYTHON, sys.executable)  # type: ignore[arg-type]


@pytest.mark.network
def test_the_lock_cache_is_kept_per_backend(tmp_path: Path, only_the_package_index: None) -> None:
    requirements = (entry(f"attrs=={version('attrs')}", "notebook", "imported by the notebook (attrs)"),)
    with_uv = LockOptions(cache_dir=tmp_path)
    with_pip_compile = dataclasses.replace(with_uv, resolver="pip-compile")
    first, other, again = (lock_requirements(requirements, PYTHON, options, sys.executable)
                           for options in (with_uv, with_pip_compile, with_uv))  # fmt: skip
    assert (first.cached, other.cached, again.cached) == (False, False, True)
    assert (first.tool, other.tool) == (f"uv pip compile {version('uv')}", f"pip-compile {version('pip-tools')}")
    assert len(list(tmp_path.iterdir())) == 2
    assert again.requirements_txt == first.requirements_txt


@pytest.mark.network
def test_uv_and_pip_compile_lock_the_same_pins_with_the_same_hashes(only_the_package_index: None) -> None:
    names = ("scikit-learn", "cloudpickle", *RUNTIME_DISTRIBUTIONS)
    requirements = tuple(entry(f"{name}=={version(name)}", "runtime", "the service runtime") for name in names)
    locked = {
        resolver: hashed_pins(backend(PYTHON, LockOptions()).pin(format_requirements_in(requirements), requirements))
        for resolver, backend in RESOLVERS.items()
    }
    assert {"scikit-learn", "numpy", "scipy", "joblib", "starlette", "anyio", "uvicorn", "h11"} <= set(locked["uv"])
    assert {"uvloop", "httptools", "orjson"} <= set(locked["uv"])
    assert all(hashes for _, hashes in locked["uv"].values())
    assert locked["uv"] == locked["pip-compile"]


@pytest.mark.network
def test_the_lock_cache_is_keyed_on_the_requirements_not_on_their_reasons(
    tmp_path: Path, only_the_package_index: None
) -> None:
    spec = f"attrs=={version('attrs')}"
    options = LockOptions(cache_dir=tmp_path)
    first = lock_requirements((entry(spec, "notebook", "loading score (attrs)"),), PYTHON, options, sys.executable)
    other = lock_requirements((entry(spec, "notebook", "loading predict (attrs)"),), PYTHON, options, sys.executable)
    assert "loading predict (attrs)" in other.requirements_in  # the comments differ...
    assert (first.cached, other.cached) == (False, True)  # ...and the second build takes the first one's lock
    changed = lock_requirements((entry("attrs>=20", "user", "--python-package"),), PYTHON, options, sys.executable)
    assert changed.cached is False
