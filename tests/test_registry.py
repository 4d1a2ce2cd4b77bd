"""The registry of deployments: numbered versions published whole, concurrently, never reused; aliases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nb2svc.cli import cli
from nb2svc.errors import UsageError
from nb2svc.registry import Registry, default_root

from helpers import make_service


def service(text: str):
    def write(directory: Path) -> None:
        (directory / "manifest.json").write_text(text)
        (directory / "artifacts").mkdir()

    return write


def test_versions_are_numbered_and_latest_is_the_highest(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    assert registry.publish("model", service("one")).number == 1
    assert registry.publish("model", service("two")).number == 2
    assert registry.numbers("model") == [1, 2]
    assert (tmp_path / "model" / "2" / "manifest.json").read_text() == "two"
    assert registry.names() == ["model"]
    for odd in ("01", "²", "3\n"):  # never a version
        (tmp_path / "model" / odd).mkdir()
    for odd in ("bad-name", "model\n"):  # never a deployment
        (tmp_path / odd).mkdir()
    assert registry.numbers("model") == [1, 2] and registry.names() == ["model"]


def test_a_write_that_fails_publishes_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path)

    def broken(directory: Path) -> None:
        (directory / "half").write_text("x")
        raise RuntimeError("the lock failed")

    with pytest.raises(RuntimeError):
        registry.publish("model", broken)
    assert registry.numbers("model") == []
    assert not (tmp_path / "model").exists()  # no staging directory, no empty deployment left behind
    registry.publish("model", lambda directory: None)
    with pytest.raises(RuntimeError):
        registry.publish("model", broken)
    assert registry.numbers("model") == [1]  # an existing deployment stays
    assert not list((tmp_path / "model").glob(".staging-*"))


def test_concurrent_publishers_get_distinct_numbers(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    publishers = 8
    together = threading.Barrier(publishers)  # all of them choose their number at the same moment
    published: list[int] = []

    def publish(index: int) -> None:
        def write(directory: Path) -> None:
            (directory / "manifest.json").write_text(str(index))
            together.wait(10)

        published.append(registry.publish("model", write).number)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(published) == list(range(1, publishers + 1))
    contents = {(tmp_path / "model" / str(n) / "manifest.json").read_text() for n in published}
    assert contents == {str(i) for i in range(publishers)}  # none lost, none overwritten


def test_a_publisher_killed_halfway_leaves_no_version_and_its_half_is_swept_away(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from nb2svc.registry import Registry\n"
        "def write(directory):\n"
        "    (directory / 'manifest.json').write_text('half')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        f"Registry({str(tmp_path)!r}).publish('model', write)\n"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "writing\n"  # it is mid-write
        finally:
            os.kill(process.pid, signal.SIGKILL)
    registry = Registry(tmp_path)
    assert registry.numbers("model") == []
    [left] = (tmp_path / "model").iterdir()
    assert left.name.startswith(".staging-")  # hidden, never a version
    assert registry.publish("model", service("whole")).number == 1
    assert not list((tmp_path / "model").glob(".staging-*"))  # the dead publisher's half is gone


def test_aliases_name_a_version_and_move(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for text in ("one", "two"):
        registry.publish("model", service(text))
    registry.set_alias("model", "prod", 1)
    assert registry.aliases("model") == {"prod": 1}
    registry.set_alias("model", "prod", 2)
    assert registry.aliases("model") == {"prod": 2}
    for alias in ("3", "latest", "bad-name", "prod\n"):
        with pytest.raises(UsageError):
            registry.set_alias("model", alias, 1)
    with pytest.raises(UsageError, match="has no version 7"):
        registry.set_alias("model", "staging", 7)


def test_removing_a_version_is_refused_while_an_alias_names_it_and_its_number_is_never_reused(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path)
    for text in ("one", "two"):
        registry.publish("model", service(text))
    registry.set_alias("model", "prod", 2)
    with pytest.raises(UsageError, match="version 2 of model is what prod points at"):
        registry.remove("model", 2)
    registry.remove_alias("model", "prod")
    registry.remove("model", 2)
    assert registry.numbers("model") == [1]
    assert registry.publish("model", service("three")).number == 3  # 2 meant another model


def test_changing_a_deployment_that_does_not_exist_is_refused_and_makes_none(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for change in (lambda: registry.set_alias("ghost", "prod", 1), lambda: registry.remove("ghost", 1)):
        with pytest.raises(UsageError, match="there is no deployment 'ghost'"):
            change()
    assert registry.names() == []


def test_names_are_url_safe_and_the_root_can_be_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="letters, digits and underscores"):
        Registry(tmp_path).publish("my model", service("x"))
    monkeypatch.setenv("NB2SVC_REGISTRY", str(tmp_path / "chosen"))
    assert default_root() == tmp_path / "chosen"
    assert Registry().root == tmp_path / "chosen"


def built(directory: Path) -> None:
    """A real service directory (its manifest as a build writes it), made in the registry's staging place."""
    directory.rmdir()  # make_service creates it
    make_service(directory, double=lambda x: x * 2)


def test_the_commands_list_alias_and_remove(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.publish("model", built)
    registry.publish("model", built)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, [*args, "--registry", str(tmp_path)])

    assert run("alias", "model", "prod", "1").output == "model/prod -> 1\n"
    listed = json.loads(run("deployments", "--json").stdout)
    [deployment] = listed["deployments"]
    assert deployment["name"] == "model" and deployment["aliases"] == {"prod": 1}
    assert [v["version"] for v in deployment["versions"]] == [1, 2]
    assert deployment["versions"][0]["notebook"] == "test.ipynb" and deployment["versions"][0]["endpoints"] == [
        "double"
    ]
    text = run("deployments").output.splitlines()
    assert "prod" in text[0] and "latest" in text[1] and "from test.ipynb" in text[1]
    refused = run("remove", "model", "1")
    assert refused.exit_code == 2 and "prod points at" in refused.output
    assert run("remove", "model", "2").exit_code == 0
    assert [v["version"] for v in json.loads(run("deployments", "--json").stdout)["deployments"][0]["versions"]] == [1]
