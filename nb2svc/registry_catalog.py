"""What a registry server serves: each deployment's versions, loaded one at a time beside the running ones.

A ``Catalog`` never changes: the ``Scanner``, its one writer, reads the registry every ``SCAN_INTERVAL``
seconds and replaces the catalog whole when something changed, so a request reads one consistent view. A new
version is loaded (``load_service``: artifacts checked, examples replayed) in a worker thread and only then
swapped in, so ``latest``, the highest-numbered *ready* version, moves only to a version that can answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio.to_thread

from nb2svc.errors import UsageError
from nb2svc.registry import LATEST, Registry
from nb2svc.runtime import dashboard
from nb2svc.runtime.calls import Service
from nb2svc.runtime.endpoint import Endpoint
from nb2svc.runtime.errors import NotFound, NotReady
from nb2svc.runtime.load import LoadedService, NotReadyReason, UnreadyService, load_service
from nb2svc.runtime.manifest import Manifest
from nb2svc.runtime.oip import OpenInference
from nb2svc.runtime.verified import verification_of

logger = logging.getLogger("nb2svc.registry")

SCAN_INTERVAL = 0.25  # seconds between two reads of the registry


@dataclass(frozen=True)
class ServedVersion:
    """One version of a deployment as the server holds it: ``loading``, ``ready`` (``endpoint`` answers) or
    ``unready`` (``reason`` says why)."""

    name: str
    number: int
    directory: Path  # <registry>/<name>/<number>
    service: Service  # its headers and metrics label; the app's settings, executor and metrics
    inference: OpenInference  # the Open Inference Protocol, answering as this version
    state: dashboard.VersionState
    endpoint: Endpoint | None = None
    manifest: Manifest | None = None
    reason: NotReadyReason | None = None

    @property
    def label(self) -> str:
        return str(self.number)

    @property
    def kind(self) -> str:
        return self.reason.kind if self.reason is not None else self.state

    def why(self) -> str:
        if self.reason is not None:
            return self.reason.message
        return "it is loading: it answers once its model has loaded and its examples answered as recorded"

    def ready_endpoint(self) -> Endpoint:
        """Its endpoint, or NotReady (503) saying why it cannot answer."""
        if self.endpoint is None:
            raise NotReady(f"version {self.number} of {self.name} cannot answer: {self.why()}", kind=self.kind)
        return self.endpoint

    def view(self) -> dict[str, Any]:
        """As the dashboard shows it (``GET /deployments``); whether it verified is read each time (``nb2svc
        verify`` may run while it is served), the rest was made once."""
        view = dict(self._described)
        if self.manifest is not None:
            view["verified"] = verification_of(self.directory, self.manifest.version)
        return view

    @functools.cached_property
    def _described(self) -> dict[str, Any]:
        url = f"/v1/{self.name}/{self.number}"
        return dashboard.version_view(self.label, url, self.state, self.manifest, self.endpoint, self.reason)


@dataclass(frozen=True)
class ServedDeployment:
    name: str
    versions: tuple[ServedVersion, ...]  # oldest first
    aliases: Mapping[str, int]

    @property
    def latest(self) -> ServedVersion | None:
        """The highest-numbered ready version: a newer one still loading, or one that failed, takes no traffic."""
        return next((v for v in reversed(self.versions) if v.state == "ready"), None)

    def ready_labels(self) -> list[str]:
        return [v.label for v in self.versions if v.state == "ready"]

    def find(self, asked: str) -> ServedVersion:
        """The version ``asked`` names (``latest``, a number or an alias); NotFound saying which exist."""
        if asked == LATEST:
            latest = self.latest
            if latest is None:
                raise NotReady(self.why_unready(), kind=self.versions[-1].kind)
            return latest
        number = int(asked) if _is_number(asked) else self.aliases.get(asked)
        found = next((v for v in self.versions if v.number == number), None)
        if found is not None:
            return found
        known = ", ".join([LATEST, *(v.label for v in self.versions), *self.aliases])
        if number is not None and not _is_number(asked):
            raise NotFound(f"alias {asked!r} of {self.name} names version {number}, which it no longer has: {known}")
        raise NotFound(f"{self.name} has no version {asked!r}: it has {known}")

    def why_unready(self) -> str:
        reasons = "; ".join(f"version {v.number}: {v.why()}" for v in reversed(self.versions))
        return f"{self.name} has no ready version ({reasons})"

    def view(self) -> dict[str, Any]:
        latest = self.latest
        aliases = {alias: str(number) for alias, number in self.aliases.items()}
        return dashboard.deployment_view(
            self.name, [v.view() for v in self.versions], latest.label if latest else None, aliases
        )


@dataclass(frozen=True)
class Catalog:
    deployments: Mapping[str, ServedDeployment]  # by name, sorted
    scanned: bool = False  # the first read of the registry is done and every version it found has loaded

    def deployment(self, name: str) -> ServedDeployment:
        found = self.deployments.get(name)
        if found is None:
            names = ", ".join(self.deployments) or "none yet"
            raise NotFound(f"there is no deployment {name!r}: this server has {names} (GET /deployments lists them)")
        return found

    def find(self, name: str, asked: str) -> ServedVersion:
        return self.deployment(name).find(asked)

    def with_version(self, served: ServedVersion) -> Catalog:
        """This catalog with ``served`` in the place of the version of that number (if it still has it)."""
        deployment = self.deployments.get(served.name)
        if deployment is None:
            return self
        versions = tuple(served if v.number == served.number else v for v in deployment.versions)
        return replace(self, deployments={**self.deployments, served.name: replace(deployment, versions=versions)})


class Scanner:
    """Keeps ``catalog`` in step with the registry: read every ``SCAN_INTERVAL`` seconds (aliases, removals and
    new versions seen within that time, whatever is loading), new versions loaded one at a time by a task of
    their own, newest first, and swapped in once loaded."""

    def __init__(self, registry: Registry, template: Service) -> None:
        self.registry = registry
        self.template = template  # what every version's Service shares
        self.catalog = Catalog({})
        self._complaints: dict[str, str] = {}  # what is wrong with each deployment's files, said once
        self._loader: asyncio.Task[None] | None = None

    async def keep_scanning(self) -> None:
        try:
            while True:
                try:
                    await self.scan()
                    self._complaints.pop("", None)
                except Exception as exc:  # the catalog stays as it was, the server serves it; the next scan retries
                    self._complain("", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(SCAN_INTERVAL)
        finally:
            if self._loader is not None:
                self._loader.cancel()

    async def scan(self) -> None:
        """Read the registry (in a worker thread: the event loop keeps answering) and arrange the catalog as it
        now is; start loading what is new."""
        layout = await anyio.to_thread.run_sync(self._read)
        self.catalog = self._arranged(layout)
        if self._loader is None or self._loader.done():
            if self._next_to_load() is not None:
                self._loader = asyncio.create_task(self._load_all())
            elif not self.catalog.scanned:
                self.catalog = replace(self.catalog, scanned=True)

    async def _load_all(self) -> None:
        """Load the versions waiting, newest first (after a restart ``latest`` is the newest at once, never an
        older one for a while), each swapped in only if the registry still has it."""
        while (waiting := self._next_to_load()) is not None:
            loaded = await anyio.to_thread.run_sync(self._load, waiting.name, waiting.number)
            self.catalog = self.catalog.with_version(loaded)
        if not self.catalog.scanned:
            self.catalog = replace(self.catalog, scanned=True)

    def _next_to_load(self) -> ServedVersion | None:
        waiting = [v for d in self.catalog.deployments.values() for v in d.versions if v.state == "loading"]
        return max(waiting, key=lambda v: v.number, default=None)

    def _read(self) -> dict[str, tuple[list[int], dict[str, int]] | None]:
        """Each deployment's version numbers and aliases (a name with no version published yet is none); None
        for one whose files cannot be read, which keeps what was read of it before, the others going on."""
        layout: dict[str, tuple[list[int], dict[str, int]] | None] = {}
        for name in self.registry.names():
            try:
                numbers, aliases = self.registry.numbers(name), self.registry.aliases(name)
            except (OSError, ValueError, UsageError) as exc:
                self._complain(name, f"{type(exc).__name__}: {exc}")
                layout[name] = None
                continue
            self._complaints.pop(name, None)
            if numbers:
                layout[name] = (numbers, aliases)
        return layout

    def _arranged(self, layout: dict[str, tuple[list[int], dict[str, int]] | None]) -> Catalog:
        """The catalog as the registry now is: versions already held kept, new ones loading, removed ones gone
        (and forgotten by the executor, which would otherwise keep their models)."""
        deployments = {}
        for name, found in sorted(layout.items()):
            held = self.catalog.deployments.get(name)
            if found is None:  # unreadable now: as it was
                if held is not None:
                    deployments[name] = held
                continue
            numbers, aliases = found
            known = {v.number: v for v in held.versions} if held else {}
            versions = tuple(known.get(n) or self._served(name, n, "loading") for n in numbers)
            deployments[name] = ServedDeployment(name, versions, aliases)
        kept = {(v.name, v.number) for deployment in deployments.values() for v in deployment.versions}
        for deployment in self.catalog.deployments.values():
            for version in deployment.versions:
                if (version.name, version.number) not in kept and version.endpoint is not None:
                    self.template.executor.forget(version.endpoint)
        return Catalog(deployments, self.catalog.scanned)

    def _load(self, name: str, number: int) -> ServedVersion:
        """Load version ``number`` of ``name`` (in a worker thread): ready, or unready with the reason."""
        loaded = load_service(self.registry.root / name / str(number))
        if isinstance(loaded, UnreadyService):
            return self._served(name, number, "unready", manifest=loaded.manifest, reason=loaded.reason)
        endpoint = _endpoint_of(name, loaded)
        if isinstance(endpoint, NotReadyReason):
            logger.error("not ready: %s", endpoint.message)
            return self._served(name, number, "unready", manifest=loaded.manifest, reason=endpoint)
        self.template.metrics.load_seconds.inc(loaded.load_seconds)
        return self._served(name, number, "ready", endpoint, loaded.manifest)

    def _served(
        self,
        name: str,
        number: int,
        state: dashboard.VersionState,
        endpoint: Endpoint | None = None,
        manifest: Manifest | None = None,
        reason: NotReadyReason | None = None,
    ) -> ServedVersion:
        shared, label = self.template, str(number)
        model_version = manifest.version if manifest is not None else ""
        headers = {"X-Deployment-Version": label} | ({"X-Model-Version": model_version} if model_version else {})
        service = Service(model_version, shared.settings, shared.executor, shared.metrics, headers, label)
        directory = self.registry.root / name / label
        inference = OpenInference(label, name)
        return ServedVersion(name, number, directory, service, inference, state, endpoint, manifest, reason)

    def _complain(self, name: str, problem: str) -> None:
        """Log what is wrong with a deployment's files (``name``; "" for the registry's own) once, not at every
        scan while it lasts."""
        if self._complaints.get(name) != problem:
            self._complaints[name] = problem
            logger.error(
                "cannot read %s of the registry %s: %s. The server keeps serving what it read before and reads it "
                "again every %ss: fix the file named, or remove it.",
                f"deployment {name}" if name else "the list of deployments",
                self.registry.root,
                problem,
                SCAN_INTERVAL,
            )


def _endpoint_of(name: str, loaded: LoadedService) -> Endpoint | NotReadyReason:
    """A version serves one endpoint: the one named as its deployment, else its only one."""
    endpoints = loaded.endpoints
    named = [e for e in endpoints if e.name == name]
    if named or len(endpoints) == 1:
        return (named or list(endpoints))[0]
    return NotReadyReason(
        "manifest",
        f"{loaded.service_dir} has the endpoints {', '.join(e.name for e in endpoints)}; a version of deployment "
        f"{name} serves one: the endpoint named {name}, or the only one. Publish a build whose notebook defines "
        f"one `predict` function, or name one of them {name}.",
    )


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()
