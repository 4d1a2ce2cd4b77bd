"""``nb2svc serve NOTEBOOK.ipynb --watch``: build, serve, and build again on every save, swapping only good builds.

Each good build is published into a registry of the session's own (a temporary directory) as the next version
of each endpoint's deployment; the registry server (``local_server``, on this machine only) loads it, replays
its examples and only then makes it ``latest``, so requests never see a half-loaded build. A build that fails,
or a version the server cannot load, is said in the terminal; the last good version goes on answering.

What is watched: the notebook, and the files in its folder its last good run read (local modules, data files:
``BuildResult.inputs``). They are few and known, so they are polled (their size and modification time, every
``POLL`` seconds) rather than watched by the OS: a save by rename, or a save while a build runs, is never
missed. A change builds again once the files have been still for ``SETTLE`` seconds (an editor's save is
several writes). The build cache makes a save that changed nothing cost nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb2svc.build_cache import InputFile
from nb2svc.deployment import publish_build
from nb2svc.errors import Nb2svcError, UsageError
from nb2svc.execute import OnCell
from nb2svc.local_server import RegistryServer, registry_server, wait_until_gone, wait_until_served
from nb2svc.pipeline import BuildResult, OnStage, build
from nb2svc.registry import Registry

POLL = 0.2  # seconds between looks at the watched files
SETTLE = 0.3  # seconds they must be still before a build starts
STOP_TIMEOUT = 10.0  # seconds the server has to stop
_LOOPBACK = ("127.0.0.1", "localhost")

Stamp = tuple[int, int] | None  # (size, mtime_ns); None: the file is not there


@dataclass
class WatchReport:
    """What the watch tells the terminal: its own lines, and each build's cells and stages."""

    say: Callable[[str], None]
    on_cell: OnCell | None = None
    on_stage: OnStage | None = None


@dataclass
class _State:
    registry: Registry
    builds: Path  # where each build is written before it is published
    server: RegistryServer
    watched: dict[Path, Stamp] = field(default_factory=dict)
    served_build: str | None = None  # what is served, as ``_same_service`` tells one build from another
    served: dict[str, int] = field(default_factory=dict)  # the version of each deployment that is latest


def watch(
    notebook: str | Path,
    report: WatchReport,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    parameters: Mapping[str, Any] | None = None,
) -> None:
    """Serve ``notebook`` at ``host:port`` and build it again whenever it or a file it read changes, until the
    process is interrupted (KeyboardInterrupt); the server and the session's registry go with it."""
    path = Path(notebook).resolve()
    if host not in _LOOPBACK:
        raise UsageError(f"--watch serves on this machine only (--host 127.0.0.1), not {host}")
    if path.suffix != ".ipynb" or not path.is_file():
        raise UsageError(f"--watch takes a notebook (.ipynb) to build and serve; {notebook} is not one")
    session = Path(tempfile.mkdtemp(prefix="nb2svc-watch-"))
    (session / "builds").mkdir()
    server = None
    try:
        server = registry_server(session / "registry", f"{host}:{port}")
        state = _State(Registry(session / "registry"), session / "builds", server, {path: _stamp(path)})
        _build_and_swap(path, state, report, parameters)
        report.say(f"watching {', '.join(_names(state.watched, path))}: a save builds again (Ctrl-C stops)")
        while True:
            changed = _wait_for_change(state.watched)
            report.say(f"{', '.join(_names(changed, path))} changed: building again…")
            _build_and_swap(path, state, report, parameters)
    finally:
        if server is not None and server.started_pid is not None:
            _stop(server.started_pid)
        shutil.rmtree(session, ignore_errors=True)


def _build_and_swap(path: Path, state: _State, report: WatchReport, parameters: Mapping[str, Any] | None) -> None:
    """One build; if good, its versions served once ready and the older ones retired. Failures are said, and
    what the failed run read is watched too (the fix may be there: a local module, a data file)."""
    before = {file: _stamp(file) for file in state.watched}  # so that a save during the build builds again
    state.watched = before
    output = Path(tempfile.mkdtemp(dir=state.builds)) / "service"
    try:
        result = build(path, output, on_cell=report.on_cell, on_stage=report.on_stage, parameters=parameters)
        _swap(result, state, report)
    except Nb2svcError as exc:
        report.say(f"build failed; {_still_serving(state)}:\n  {exc.message}")
        failed_read = [path.parent / name for name in exc.details.get("files_read", [])]
        state.watched = {**{file: _stamp(file) for file in failed_read}, **before}
        return
    except Exception as exc:  # a bug of nb2svc's: said, and the last good build goes on serving
        report.say(f"build failed in nb2svc itself (please report it); {_still_serving(state)}:\n  {exc!r}")
        return
    finally:
        shutil.rmtree(output.parent, ignore_errors=True)
    # the files it read as they were when it opened them: one saved since then builds again
    state.watched = {path: before[path], **{path.parent / item.path: _opened(item) for item in result.inputs}}


def _swap(result: BuildResult, state: _State, report: WatchReport) -> None:
    made = _same_service(result)
    if made == state.served_build:
        report.say(f"the build is the service already served; {_still_serving(state)}")
        return
    versions = publish_build(result.service_dir, state.registry.root)
    try:
        for version in versions:
            wait_until_served(state.server, version)
    except Nb2svcError as exc:
        report.say(f"the new build does not load; {_still_serving(state)}:\n  {exc.message}")
        return
    previous, state.served = state.served, {version.name: version.number for version in versions}
    state.served_build = made
    removed = set()
    for name in state.registry.names():  # keep what is served now, and what was (requests may still be on it)
        for number in state.registry.numbers(name):  # of endpoints the notebook still has
            if name not in state.served or number not in (state.served[name], previous.get(name)):
                state.registry.remove(name, number)
                removed.add((name, number))
    if not wait_until_gone(state.server, removed):
        report.say(f"the server still serves removed versions: {sorted(removed)}")
    for version in versions:
        report.say(f"serving {version.name} version {version.number} at {state.server.url}/v1/{version.name}/latest")


def _same_service(result: BuildResult) -> str:
    """What a build is, but for when it ran and how long its cells took: its manifest (artifacts' digests,
    notebook, examples, parameters, lock) and its requirements.txt."""
    manifest = {**result.manifest.to_dict(), "built_at": None, "cells": None}
    return json.dumps([manifest, result.lock.requirements_txt], sort_keys=True)


def _still_serving(state: _State) -> str:
    if not state.served:
        return "nothing is served yet"
    versions = ", ".join(f"{name} version {number}" for name, number in state.served.items())
    return f"still serving the last good build ({versions})"


def _wait_for_change(watched: dict[Path, Stamp]) -> dict[Path, Stamp]:
    """The watched files that changed, once they have been still for ``SETTLE`` seconds."""
    changed: dict[Path, Stamp] = {}
    while not changed:
        time.sleep(POLL)
        changed = {file: stamp for file in watched if (stamp := _stamp(file)) != watched[file]}
    while True:  # settle: an editor writes a save in several steps
        time.sleep(SETTLE)
        again = {file: _stamp(file) for file in changed}
        if again == changed:
            return changed
        changed = again


def _opened(item: InputFile) -> Stamp:
    return None if item.size is None or item.mtime_ns is None else (item.size, item.mtime_ns)


def _stamp(file: Path) -> Stamp:
    try:
        status = file.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _names(files: Mapping[Path, Any], notebook: Path) -> list[str]:
    return [os.path.relpath(file, notebook.parent) for file in files]


def _stop(pid: int) -> None:
    """Stop the registry server this watch started: SIGTERM (in-flight requests end first), SIGKILL after
    ``STOP_TIMEOUT`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.05)
    except (ProcessLookupError, ChildProcessError):
        pass
