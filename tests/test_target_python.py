"""What has a distribution for a target Python (from an index's PEP 691 JSON), and the cached environments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging import tags
from packaging.version import Version

from nb2svc.interpreters import find_interpreter
from nb2svc.locking import LockOptions
from nb2svc.target_python import _fitting_versions, _nearest, target_environment

PY310 = Version("3.10.13")
SUPPORTED_310 = set(tags.cpython_tags(python_version=(3, 10))) | set(
    tags.compatible_tags(python_version=(3, 10), interpreter="cp310")
)
PLATFORM = next(iter(tags.platform_tags()))  # this machine's, e.g. manylinux_2_36_x86_64


def wheel(name: str, version: str, tag: str, **extra: Any) -> dict[str, Any]:
    return {"filename": f"{name}-{version}-{tag}.whl", **extra}


def fitting(files: list[dict[str, Any]], pinned: str | None = None) -> set[str]:
    found = _fitting_versions(files, SUPPORTED_310, PY310, Version(pinned) if pinned else None)
    return {str(v) for v in found}


def test_a_version_fits_by_its_wheels_tags_or_as_a_pure_source_package() -> None:
    files = [
        wheel("numpy", "2.2.6", f"cp310-cp310-{PLATFORM}"),  # fits
        wheel("numpy", "2.4.6", f"cp311-cp311-{PLATFORM}"),  # another Python only
        {"filename": "numpy-2.4.6.tar.gz"},  # has wheels, none for 3.10: its sdist does not count
        wheel("numpy", "2.0.0", "cp310-cp310-win_amd64"),  # another platform only
        wheel("numpy", "2.1.0", f"cp310-abi3-{PLATFORM}"),  # the stable ABI
        wheel("numpy", "2.1.1", "cp310-none-any"),  # CPython 3.10, any platform
        wheel("numpy", "2.1.2", "py3-none-any", **{"requires-python": ">=3.11"}),  # refused by requires-python
        wheel("numpy", "2.1.3", "py3-none-any", **{"requires-python": "not a specifier"}),  # unreadable: allowed
        {"filename": "purelib-1.0.tar.gz"},  # a version with no wheel at all: its sdist counts
    ]
    assert fitting(files) == {"2.2.6", "2.1.0", "2.1.1", "2.1.3", "1.0"}


def test_a_yanked_release_still_fits_its_exact_pin_only() -> None:
    files = [wheel("requests", "2.32.0", "py3-none-any", yanked=True), wheel("requests", "2.32.3", "py3-none-any")]
    assert fitting(files) == {"2.32.3"}
    assert fitting(files, pinned="2.32.0") == {"2.32.0", "2.32.3"}  # PEP 592: an == pin installs it


def test_the_versions_named_are_those_nearest_the_training_one() -> None:
    versions = {Version(v) for v in ["1.0", "1.9", "2.0rc1", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "3.0", "3.1"]}
    assert _nearest(versions, Version("2.6")) == ["2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "3.0", "3.1"]
    assert _nearest(versions, Version("0.5")) == ["1.0", "1.9"]


@pytest.mark.network  # the environment is installed from the package index
def test_an_environment_is_made_once_and_reused(tmp_path: Path) -> None:
    interpreter = find_interpreter("3.12")
    options = LockOptions(cache_dir=tmp_path / "locks")
    pins = {"CloudPickle": "3.1.1"}  # not a canonical name: the environment's name for it is found all the same
    made = target_environment(interpreter, pins, options, allow_other_versions=False)
    again = target_environment(interpreter, pins, options, allow_other_versions=False)
    assert (made.cached, again.cached, made.python) == (False, True, again.python)
    assert Path(made.python).parent.parent.parent == tmp_path / "environments"
    listed = subprocess.run(
        [made.python, "-c", "import cloudpickle, ipykernel, sys; print(cloudpickle.__version__, sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    assert listed.stdout.split()[0] == "3.1.1" and "(3, 12)" in listed.stdout
    assert sys.version_info[:2] != (3, 12)
