"""`nb2svc image`: the example service's image really built with podman, and its own command run from its filesystem.

No image registry is reachable here, so the base is made locally (Debian bookworm's python3 by mmdebstrap,
`podman import`, kept across runs). `podman run` cannot create a container on these machines (hybrid cgroups),
so the test mounts the image and runs its CMD under `unshare --mount --pid --fork chroot`, as user 10001, on
127.0.0.1. `make container-tools` installs podman and mmdebstrap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import nb2svc
from nb2svc.cli import cli
from nb2svc.errors import ContainerToolNotFound, ImageBuildFailed, WheelUnavailable
from nb2svc.image import ContainerTool, _wheel_error, build_command, manylinux_platforms, podman_options
from nb2svc.runtime.manifest import Manifest, read_manifest
from nb2svc.targets import write_targets

from helpers import FIXTURES, local_base_image, make_service, podman, post_json, running_server


@pytest.fixture(scope="module")
def base_image() -> str:
    return local_base_image()


@pytest.fixture(scope="module")
def built(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """The example service built, and its image built by the real `nb2svc image --json`; the image removed after."""
    service = nb2svc.build(FIXTURES / "linear_regression.ipynb", tmp_path_factory.mktemp("image") / "lr").service_dir
    tag = f"localhost/nb2svc-test-image:{os.getpid()}"
    command = [
        str(Path(sys.executable).parent / "nb2svc"),
        "image",
        str(service),
        "--tag",
        tag,
        "--base-image",
        base_image,
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        yield read_manifest(service), json.loads(done.stdout)
    finally:
        podman("rmi", "--force", tag)


@contextmanager
def mounted(image_id: str) -> Iterator[Path]:
    """The image's filesystem, mounted read-only by podman; unmounted after."""
    done = podman("image", "mount", image_id)
    assert done.returncode == 0, done.stderr
    try:
        yield Path(done.stdout.strip())
    finally:
        podman("image", "umount", image_id)


def config(image_id: str) -> dict[str, Any]:
    done = podman("image", "inspect", "--format", "{{json .Config}}", image_id)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def on_port(command: list[str], port: int) -> list[str]:
    """The image's CMD serving on 127.0.0.1:``port`` instead of 0.0.0.0:8000."""
    replaced = {"--host": "127.0.0.1", "--port": str(port)}
    return [replaced.get(command[i - 1], arg) if i else arg for i, arg in enumerate(command)]


def uids_of_descendants(pid: int) -> dict[str, str]:
    """Command line -> real uid of every process below ``pid``."""
    found: dict[str, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            status = Path(f"/proc/{child}/status").read_text()
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            found[Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()] = uid
            found.update(uids_of_descendants(int(child)))
    return found


@pytest.mark.container
@pytest.mark.network  # the build locks, and the wheels come, from the package index
def test_the_image_serves_the_example_from_its_own_filesystem_as_user_10001(
    built: tuple[Manifest, dict[str, Any]], unused_tcp_port: int
) -> None:
    manifest, result = built
    image = config(result["image_id"])
    assert image["User"] == "10001:10001" and image["WorkingDir"] == "/service"
    example = manifest.endpoints[0].examples[0]
    with mounted(result["image_id"]) as root:
        command = [
            "unshare", "--mount", "--pid", "--fork", "--kill-child", f"--mount-proc={root}/proc",
            "chroot", "--userspec=10001:10001", str(root),
            "/usr/bin/env", "-i", "-C", image["WorkingDir"], *image["Env"], *on_port(image["Cmd"], unused_tcp_port),
        ]  # fmt: skip
        started = time.monotonic()
        with running_server(command, unused_tcp_port, ready_path="/ready", timeout=120) as server:
            cold_start = time.monotonic() - started
            answer = post_json(f"{server.url}{manifest.endpoints[0].route}", example.request)
            uids = uids_of_descendants(server.process.pid)
    assert answer == example.response
    assert [uid for line, uid in uids.items() if "uvicorn app:app" in line and "chroot" not in line] == ["10001"]
    print(f"cold start to /ready: {cold_start:.1f}s; built in {result['build_seconds']:.1f}s")


@pytest.mark.container
@pytest.mark.network  # the build locks, and the wheels come, from the package index
def test_the_image_says_what_it_holds_and_keeps_no_wheels(built: tuple[Manifest, dict[str, Any]]) -> None:
    manifest, result = built
    image = config(result["image_id"])
    assert image["Labels"]["org.opencontainers.image.version"] == manifest.version
    assert image["Labels"]["org.opencontainers.image.title"] == manifest.name
    assert image["Labels"]["io.nb2svc.notebook.sha256"] == manifest.notebook.sha256
    assert image["Labels"]["io.nb2svc.version"] == manifest.nb2svc_version
    healthcheck = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", result["image_id"])
    assert "http://127.0.0.1:8000/health" in " ".join(json.loads(healthcheck.stdout)["Test"])
    assert image["Cmd"][-4:] == ["--loop", "uvloop", "--http", "httptools"]
    with mounted(result["image_id"]) as root:
        assert not (root / "wheels").exists()
        assert not list((root / "opt" / "venv").rglob("*.whl")) and not list((root / "service").rglob("*.whl"))
        assert sorted(p.name for p in (root / "service").iterdir()) == [
            "README.md", "app.py", "artifacts", "manifest.json", "nb2svc_runtime", "requirements.in", "requirements.txt"
        ]  # fmt: skip
        assert (root / "opt" / "venv" / "bin" / "uvicorn").is_file()
    assert result["wheels"] == len(manifest.lock.pins) and result["size_bytes"] > 0
    print(f"image size: {result['size_bytes'] / 1e6:.0f} MB")


def test_no_container_tool_says_how_to_install_podman(tmp_path: Path) -> None:
    service = make_service(tmp_path / "service", double=lambda x: x * 2)
    (service / "Dockerfile").write_text("FROM scratch\n")
    done = CliRunner().invoke(cli, ["image", str(service)], env={"PATH": str(tmp_path / "empty")})
    assert done.exit_code == ContainerToolNotFound.exit_code
    assert "apt-get install podman" in done.output


def test_each_tool_builds_with_its_own_flags(tmp_path: Path) -> None:
    def flags(name: str) -> list[str]:
        command = build_command(ContainerTool(name, name), tmp_path, "t:1", "base:3.11", tmp_path / "id")
        return command[1:]

    common = ["--tag", "t:1", "--build-arg", "BASE_IMAGE=base:3.11", "--iidfile", str(tmp_path / "id"), str(tmp_path)]
    chroot = ["build", "--isolation=chroot", "--network=host", "--layers=false", "--format=docker"]
    assert flags("podman") == [*podman_options(), *chroot, *common]
    assert flags("buildah") == [*chroot, *common]
    assert flags("docker") == ["build", *common]


def test_a_package_without_a_wheel_for_the_image_is_named() -> None:
    error = _wheel_error("ERROR: No matching distribution found for pysomething==1.0\n", "3.11")
    assert isinstance(error, WheelUnavailable) and error.details["package"] == "pysomething==1.0"
    assert error.message.startswith("pysomething==1.0 has no wheel for Python 3.11 on Linux")
    assert "manylinux_2_5_x86_64" in manylinux_platforms("x86_64")


@pytest.mark.container
def test_a_failed_build_ends_with_the_tools_output(tmp_path: Path) -> None:
    service = make_service(tmp_path / "service", double=lambda x: x * 2)
    write_targets(service, read_manifest(service))
    (service / "requirements.txt").write_text("")
    if not shutil.which("podman"):
        pytest.fail("podman is needed: `make container-tools` installs it")
    done = CliRunner().invoke(cli, ["image", str(service), "--tool", "podman", "--base-image", "localhost/no-such:1"])
    assert done.exit_code == ImageBuildFailed.exit_code, done.output
    assert "podman build failed" in done.output and "localhost/no-such:1" in done.output
