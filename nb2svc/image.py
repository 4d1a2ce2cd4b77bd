"""``nb2svc image``: a service directory's container image, built with no network inside.

The locked wheels are downloaded on the host (with the host's pip configuration: its index, proxy and
certificates) into a temporary build context, a copy of the service directory plus ``wheels/``; the
directory's own Dockerfile installs them with ``--no-index`` and leaves them behind in its first stage.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nb2svc.errors import ContainerToolNotFound, ImageBuildFailed, ServiceDirInvalid, WheelUnavailable
from nb2svc.runtime.manifest import Manifest, ManifestError, read_manifest
from nb2svc.targets.docker import default_base_image

TOOLS = ("podman", "buildah", "docker")  # the order they are looked for in
# The newest glibc a wheel may need: Debian bookworm's, the oldest base of the current python:X.Y-slim images.
GLIBC_MINOR = 36
IMPLEMENTATIONS = {"cpython": "cp", "pypy": "pp"}


@dataclass(frozen=True)
class ContainerTool:
    name: str  # podman, buildah or docker
    path: str


@dataclass(frozen=True)
class ImageResult:
    tool: str
    tag: str
    image_id: str
    size_bytes: int | None  # None where the tool does not say (buildah)
    base_image: str
    wheels: int
    download_seconds: float
    build_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, **asdict(self)}


def find_tool(asked: str | None = None) -> ContainerTool:
    """The container tool asked for, else the first of podman, buildah and docker on PATH."""
    for name in (asked,) if asked else TOOLS:
        path = shutil.which(name)
        if path:
            return ContainerTool(name, path)
    looked_for = asked or ", ".join(TOOLS)
    raise ContainerToolNotFound(
        f"no container tool found on PATH (looked for {looked_for}): install podman (`apt-get install podman` on "
        "Debian and Ubuntu, `dnf install podman` on Fedora), or pass --tool with one that is installed"
    )


def build_command(tool: ContainerTool, context: Path, tag: str, base_image: str, iidfile: Path) -> list[str]:
    """The command that builds ``context`` with ``tool``.

    podman and buildah build with chroot isolation on the host's network namespace: that works where they cannot
    create a container (inside another container, hybrid cgroups, no systemd), and the build uses no network.
    --layers=false leaves no intermediate images behind; --format=docker keeps the HEALTHCHECK (OCI has none).
    """
    common = ["--tag", tag, "--build-arg", f"BASE_IMAGE={base_image}", "--iidfile", str(iidfile), str(context)]
    buildah_flags = ["build", "--isolation=chroot", "--network=host", "--layers=false", "--format=docker"]
    if tool.name == "podman":
        return [tool.path, *podman_options(), *buildah_flags, *common]
    if tool.name == "buildah":
        return [tool.path, *buildah_flags, *common]
    return [tool.path, "build", *common]


def podman_options() -> list[str]:
    """podman's global options that work without systemd (cgroupfs, events in a file)."""
    return ["--cgroup-manager=cgroupfs", "--events-backend=file"]


def size_command(tool: ContainerTool, image_id: str) -> list[str] | None:
    """The command that prints the image's size in bytes, or None if ``tool`` has none."""
    if tool.name == "podman":
        return [tool.path, *podman_options(), "image", "inspect", "--format", "{{.Size}}", image_id]
    if tool.name == "docker":
        return [tool.path, "image", "inspect", "--format", "{{.Size}}", image_id]
    return None


def build_image(
    service_dir: Path,
    *,
    tag: str | None = None,
    base_image: str | None = None,
    tool: str | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> ImageResult:
    """Build ``service_dir``'s image: download its locked wheels, then build its Dockerfile with no network."""
    manifest = _service_manifest(service_dir)
    container_tool = find_tool(tool)
    base = base_image or default_base_image(manifest.python.minor)
    name = tag or default_tag(manifest)
    with tempfile.TemporaryDirectory(prefix="nb2svc-image-") as scratch:
        context = Path(scratch) / "context"
        shutil.copytree(service_dir, context, ignore=shutil.ignore_patterns("wheels", ".venv", "__pycache__", ".git"))
        on_step(f"downloading the locked wheels for Python {manifest.python.minor} on {platform.machine()}")
        started = time.monotonic()
        wheels = download_wheels(context / "requirements.txt", context / "wheels", manifest)
        downloaded = time.monotonic() - started
        on_step(f"building {name} from {base} with {container_tool.name}")
        started = time.monotonic()
        image_id = _build(container_tool, context, name, base, Path(scratch) / "image-id")
        built = time.monotonic() - started
    return ImageResult(
        container_tool.name, name, image_id, _size(container_tool, image_id), base, wheels, downloaded, built
    )


def default_tag(manifest: Manifest) -> str:
    return f"{re.sub(r'[^a-z0-9._-]+', '-', manifest.name.lower())}:{manifest.version}"


def download_wheels(requirements: Path, wheels: Path, manifest: Manifest) -> int:
    """Download a wheel of every locked package for the image's Python and platform into ``wheels``; their count."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"--python-version={manifest.python.minor}",
        f"--implementation={IMPLEMENTATIONS.get(manifest.python.implementation, 'cp')}",
        *(f"--platform={tag}" for tag in manylinux_platforms(platform.machine())),
        f"--dest={wheels}",
        "--requirement",
        str(requirements),
    ]
    if manifest.lock.hashes:
        command.append("--require-hashes")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise _wheel_error(done.stdout + done.stderr, manifest.python.minor)
    return len(list(wheels.glob("*.whl")))


def manylinux_platforms(machine: str) -> list[str]:
    """The platform tags of a glibc up to ``GLIBC_MINOR`` on ``machine``, newest first (pip takes them as given)."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 4, -1)]
    return [*tags, f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]


def _wheel_error(output: str, python_minor: str) -> WheelUnavailable:
    missing = re.search(r"No matching distribution found for (\S+)", output)
    if missing:
        return WheelUnavailable(
            f"{missing.group(1)} has no wheel for Python {python_minor} on Linux {platform.machine()} (manylinux, "
            f"glibc 2.{GLIBC_MINOR} or older), and the image installs wheels only (no compiler, no network): pin a "
            "version that has one (`nb2svc build --python-package NAME==VERSION`) and build again",
            package=missing.group(1),
        )
    return WheelUnavailable(f"downloading the locked wheels failed (pip download):\n  {_tail(output)}")


def _build(tool: ContainerTool, context: Path, tag: str, base_image: str, iidfile: Path) -> str:
    done = subprocess.run(
        build_command(tool, context, tag, base_image, iidfile),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        raise ImageBuildFailed(
            f"{tool.name} build failed (exit status {done.returncode}); the end of its output:\n  {_tail(done.stdout)}"
        )
    return iidfile.read_text().strip().removeprefix("sha256:")


def _size(tool: ContainerTool, image_id: str) -> int | None:
    command = size_command(tool, image_id)
    if command is None:
        return None
    done = subprocess.run(command, capture_output=True, text=True)
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip().isdigit() else None


def _service_manifest(service_dir: Path) -> Manifest:
    try:
        manifest = read_manifest(service_dir)
    except ManifestError as exc:
        raise ServiceDirInvalid(str(exc), path=str(service_dir)) from None
    if not (service_dir / "Dockerfile").is_file():
        raise ServiceDirInvalid(
            f"{service_dir / 'Dockerfile'} is missing: rebuild the service with `nb2svc build`", path=str(service_dir)
        )
    return manifest


def _tail(output: str, lines: int = 20) -> str:
    return "\n  ".join(output.strip().splitlines()[-lines:])
