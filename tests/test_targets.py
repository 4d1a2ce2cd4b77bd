"""Deployment targets write their files from a manifest object alone: no kernel, no index."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nb2svc.runtime.manifest import Manifest, read_manifest
from nb2svc.targets import TARGETS, write_targets

from helpers import make_service


def double(x):
    return x * 2


def test_every_target_writes_its_files(tmp_path: Path) -> None:
    manifest = read_manifest(make_service(tmp_path / "made", double=double))
    write_targets(tmp_path, manifest)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "app.py",
        "ray_app.py",
    ]
    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE=docker.io/library/python:{manifest.python.minor}-slim\n" in dockerfile
    assert "--no-index --find-links /wheels --require-hashes --no-deps -r /tmp/requirements.txt" in dockerfile
    assert "USER 10001:10001\n" in dockerfile
    assert f'org.opencontainers.image.version="{manifest.version}"' in dockerfile
    assert f'io.nb2svc.notebook.sha256="{manifest.notebook.sha256}"' in dockerfile
    assert "urlopen('http://127.0.0.1:8000/health'" in dockerfile
    assert "wheels/" not in (tmp_path / ".dockerignore").read_text().splitlines()
    assert "curl -s -X POST localhost:8000/v1/double/latest" in (tmp_path / "README.md").read_text()


def test_the_container_runs_uvicorn_without_its_access_log_on_uvloop_and_httptools_where_locked(
    tmp_path: Path,
) -> None:
    fast = make_service(tmp_path / "fast", pins={"uvloop": "0.23.0", "httptools": "0.9.0", "uvicorn": "0.54.0"})
    write_targets(tmp_path / "fast", read_manifest(fast))
    assert (tmp_path / "fast" / "Dockerfile").read_text().splitlines()[-1] == (
        'CMD ["uvicorn", "app:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", '
        '"--loop", "uvloop", "--http", "httptools"]'
    )
    plain = make_service(tmp_path / "plain", pins={"uvicorn": "0.54.0"}, double=double)  # a lock made on Windows
    write_targets(tmp_path / "plain", read_manifest(plain))
    assert (tmp_path / "plain" / "Dockerfile").read_text().splitlines()[-1] == (
        'CMD ["uvicorn", "app:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]'
    )


def test_a_lock_without_hashes_is_installed_without_require_hashes(tmp_path: Path) -> None:
    manifest = read_manifest(make_service(tmp_path / "made", double=double))
    offline = dataclasses.replace(manifest, lock=dataclasses.replace(manifest.lock, hashes=False, offline=True))
    write_targets(tmp_path, offline)
    assert "--require-hashes" not in (tmp_path / "Dockerfile").read_text()
    assert "OFFLINE lock" in (tmp_path / "README.md").read_text()


def test_a_target_is_a_module_with_files(tmp_path: Path) -> None:
    manifest = read_manifest(make_service(tmp_path / "made", double=double))

    class ServeConfig:
        def files(self, manifest: Manifest) -> dict[str, str]:
            return {"serve.yaml": f"name: {manifest.name}\n"}

    write_targets(tmp_path, manifest, (*TARGETS, ServeConfig()))
    assert (tmp_path / "serve.yaml").read_text() == "name: test\n"
