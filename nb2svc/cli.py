"""The `nb2svc` command: parses options, calls the library, turns its errors into messages and exit codes."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nb2svc import __version__
from nb2svc.errors import Nb2svcError
from nb2svc.locking import DEFAULT_RESOLVER, RESOLVER_NAMES, LockOptions, ResolverName
from nb2svc.registry import REGISTRY_PORT
from nb2svc.runtime.settings import SETTINGS, Setting, Settings

if TYPE_CHECKING:  # the builder (nbclient, nbformat...) is imported by the commands that use it: not by serve
    from nb2svc.execute import CellProgress
    from nb2svc.pipeline import BuildResult, StageProgress
    from nb2svc.verification import ExampleCheck, VerifyResult


@click.group(context_settings={"auto_envvar_prefix": "NB2SVC", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nb2svc")
def cli() -> None:
    """Turn a Jupyter notebook into a self-contained model service."""


_PARAMETERS_OPTION = click.option(
    "-p",
    "--parameters",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Override a default of the cell tagged 'parameters', as papermill's -p does (True, False, None, "
    "ints and floats are parsed, anything else is a string). Repeatable.",
)
_PARAMETERS_FILE_OPTION = click.option(
    "-f",
    "--parameters-file",
    "parameters_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A YAML mapping of parameters, as papermill's -f (a later file, then -p, wins). Repeatable.",
)


def _overrides(parameters: tuple[tuple[str, str], ...], files: tuple[Path, ...]) -> dict[str, Any]:
    """The parameters of -f files, then of -p, each later one winning, as papermill reads them."""
    from nb2svc.parameters import parse_value, read_parameters_file

    overrides = {name: value for path in files for name, value in read_parameters_file(path).items()}
    return overrides | {name: parse_value(value) for name, value in parameters}


@cli.command("build")
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Service directory to write.  [default: NAME_service]"
)
@click.option("--force", is_flag=True, help="Replace the output directory if it exists.")
@click.option("--kernel", "kernel_name", help="Jupyter kernel to run the notebook in.  [default: the notebook's]")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="Seconds one cell may run; 0 for no limit.",
)
@click.option(
    "--example",
    "examples",
    type=(str, str),
    multiple=True,
    metavar="ENDPOINT JSON",
    help="Record another example: the endpoint called with this JSON `data` value, as a request would. Repeatable.",
)
@click.option(
    "--python-package",
    "python_packages",
    multiple=True,
    metavar="SPEC",
    help="Add or override a requirement (pip syntax). Repeatable.",
)
@_PARAMETERS_OPTION
@_PARAMETERS_FILE_OPTION
@click.option(
    "--requirements",
    "requirements_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Lock this file instead of the observed requirements.",
)
@click.option(
    "--python-version",
    metavar="X.Y",
    help="Python to serve on. Another than the kernel's: the notebook runs again in that Python, and every example "
    "must answer as in the training kernel.  [default: the kernel's]",
)
@click.option(
    "--python",
    "python",
    metavar="PATH",
    help="The interpreter of --python-version.  [default: found on PATH, under pyenv, or by uv]",
)
@click.option(
    "--allow-other-versions",
    is_flag=True,
    help="With --python-version: where a package's training version has none for that Python, take the resolver's.",
)
@click.option(
    "--index-url",
    metavar="URL",
    help="Package index to lock against (passed to the resolver and written into the lock).",
)
@click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL", help="Another index. Repeatable.")
@click.option(
    "--resolver",
    type=click.Choice(list(RESOLVER_NAMES)),
    default=DEFAULT_RESOLVER,
    show_default=True,
    help="Resolver that locks: uv (for any Python) or pip-compile (for the Python nb2svc runs under only).",
)
@click.option("--offline", is_flag=True, help="No resolver: pin the installed closure, without hashes.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Run the notebook even if nothing the last build depended on changed (see docs: the build cache).",
)
@click.option("--verify", "then_verify", is_flag=True, help="Run `nb2svc verify` on the result.")
@click.option(
    "--deploy",
    "then_deploy",
    is_flag=True,
    help="Publish each endpoint into the registry as the next version of its deployment (after --verify, if given).",
)
@click.option(
    "--registry",
    type=click.Path(path_type=Path),
    help="The registry --deploy publishes into.  [default: NB2SVC_REGISTRY, else the user's data directory]",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the result on stdout.")
def build_command(
    notebook: Path,
    output: Path | None,
    force: bool,
    kernel_name: str | None,
    timeout: float,
    examples: tuple[tuple[str, str], ...],
    python_packages: tuple[str, ...],
    parameters: tuple[tuple[str, str], ...],
    parameters_files: tuple[Path, ...],
    requirements_file: Path | None,
    python_version: str | None,
    python: str | None,
    allow_other_versions: bool,
    index_url: str | None,
    extra_index_urls: tuple[str, ...],
    resolver: ResolverName,
    offline: bool,
    no_cache: bool,
    then_verify: bool,
    then_deploy: bool,
    registry: Path | None,
    as_json: bool,
) -> None:
    """Run NOTEBOOK in a Jupyter kernel and write its service directory."""
    from nb2svc.deployment import publish_build
    from nb2svc.pipeline import build
    from nb2svc.verification import verify

    progress = _Progress()
    options = LockOptions(
        index_url=index_url,
        extra_index_urls=extra_index_urls,
        python_version=python_version,
        resolver=resolver,
        offline=offline,
    )
    with _reporting_errors(as_json, progress):
        overrides = _overrides(parameters, parameters_files)
        result = build(
            notebook,
            output,
            force=force,
            kernel_name=kernel_name,
            timeout=timeout or None,
            examples=_parse_examples(examples),
            python_packages=python_packages,
            requirements_file=requirements_file,
            lock_options=options,
            on_cell=progress,
            python=python,
            allow_other_versions=allow_other_versions,
            parameters=overrides,
            on_stage=progress.stage,
            cache=not no_cache,
        )
        report = result.to_dict()
        if not as_json:
            _print_build(result)
        if then_verify:
            if not as_json:
                click.echo("verifying…", err=True)
            verified = verify(result.service_dir, on_check=None if as_json else _print_check, python=python)
            report["verify"] = verified.to_dict()
            if not as_json:
                _print_verified(verified)
        if then_deploy:
            published = publish_build(result.service_dir, registry)
            report["deployments"] = [{"name": v.name, "version": v.number, "path": str(v.path)} for v in published]
            for version in published if not as_json else ():
                click.echo(f"deployed {version.name} version {version.number} ({version.path})", err=True)
    if as_json:
        click.echo(json.dumps(report))


@cli.command("verify")
@click.argument("service_dir", default=".", type=click.Path(path_type=Path))
@click.option(
    "--python",
    metavar="PATH",
    help="The interpreter of the service's Python.  [default: found on PATH, under pyenv, or by uv]",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the result on stdout.")
def verify_command(service_dir: Path, python: str | None, as_json: bool) -> None:
    """Install SERVICE_DIR's lock into a fresh environment, serve it, and replay its recorded examples."""
    from nb2svc.verification import verify

    with _reporting_errors(as_json, None):
        result = verify(service_dir, on_check=None if as_json else _print_check, python=python)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        _print_verified(result)


@cli.command("image")
@click.argument("service_dir", default=".", type=click.Path(path_type=Path))
@click.option("--tag", help="Name of the image.  [default: NAME:VERSION of the manifest]")
@click.option(
    "--base-image",
    metavar="IMAGE",
    help="Image to build on: a Python of the service's X.Y at python3, glibc 2.36 or newer.  "
    "[default: docker.io/library/python:X.Y-slim]",
)
@click.option(
    "--tool",
    type=click.Choice(["podman", "buildah", "docker"]),
    help="Container tool to build with.  [default: the first of podman, buildah, docker on PATH]",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the result on stdout.")
def image_command(service_dir: Path, tag: str | None, base_image: str | None, tool: str | None, as_json: bool) -> None:
    """Build SERVICE_DIR's container image: the locked wheels are downloaded here, the build has no network."""
    from nb2svc.image import build_image

    with _reporting_errors(as_json, None):
        result = build_image(
            service_dir,
            tag=tag,
            base_image=base_image,
            tool=tool,
            on_step=lambda step: None if as_json else click.echo(f"{step}...", err=True),
        )
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    size = f"{result.size_bytes / 1e6:.0f} MB" if result.size_bytes is not None else "size unknown"
    click.echo(
        f"built {result.tag} ({result.image_id[:12]}, {size}) with {result.tool} in {result.build_seconds:.1f}s, "
        f"after downloading {result.wheels} wheels in {result.download_seconds:.1f}s",
        err=True,
    )
    click.echo(result.image_id)


def _parse_examples(pairs: tuple[tuple[str, str], ...]) -> dict[str, list[Any]]:
    examples: dict[str, list[Any]] = {}
    for endpoint, text in pairs:
        try:
            examples.setdefault(endpoint, []).append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"{text!r} is not JSON ({exc})", param_hint="--example") from None
    return examples


def _print_build(result: BuildResult) -> None:
    echo = functools.partial(click.echo, err=True)
    if result.reused:
        echo(
            f"reused the build of {result.manifest.built_at} from the cache in {result.seconds:.1f}s: the notebook, "
            f"its parameters, the files it read ({len(result.inputs)}), its kernel and the options are "
            "as they were (--no-cache runs it again)"
        )
    else:
        echo(f"built {result.service_dir} in {result.seconds:.1f}s")
    again = result.retarget
    if again:
        how = "from the cache" if again["environment_cached"] else f"made in {again['environment_seconds']:.1f}s"
        echo(
            f"  for Python {again['python']} (trained on {again['trained_python']}): its environment {how}, "
            f"the notebook's second run {again['rerun_seconds']:.1f}s; {len(again['parity'])} examples answered "
            "as in the training kernel"
        )
        if not again["parity"]:
            echo("  WARNING: no example was recorded, so parity compared nothing: call the endpoint in the notebook")
            echo("  after its `predict` cell, or pass --example ENDPOINT JSON")
        for name, change in again["changed_versions"].items():
            echo(f"  {name}: {change['chosen']} instead of the training {change['trained']} (--allow-other-versions)")
    for endpoint in result.manifest.endpoints:
        examples = _counted(len(endpoint.examples), "example")
        calls = f" from {_counted(endpoint.calls_seen, 'call')}" if endpoint.calls_seen else ""
        echo(f"  POST {endpoint.route}  {endpoint.name}{endpoint.signature}  ({examples}{calls})")
        for reason in endpoint.unrecorded:
            echo(f"      a call not recorded: {reason}")
    echo("requirements, and why:")
    for requirement in result.requirements:
        echo(f"  {requirement.spec:32} {'; '.join(reason.text for reason in requirement.reasons)}")
    lock = result.lock
    how = "from the cache" if lock.cached else f"in {lock.seconds:.1f}s"
    hashes = "with hashes" if lock.hashes else "WITHOUT HASHES (offline: no resolver was run)"
    echo(f"locked {len(lock.pins)} packages for Python {lock.python_version} {hashes}, {how} ({lock.tool})")
    echo(f"serve it with: nb2svc serve {result.service_dir}")


def _counted(count: int, thing: str) -> str:
    return f"{count} {thing}{'s' * (count != 1)}"


def _print_verified(result: VerifyResult) -> None:
    if not result.checks and result.calls_seen:
        reasons = "".join(f"\n  {reason}" for reason in result.unrecorded)
        click.echo(
            "verified: the lock installed and the service started, but no answers were compared: the notebook "
            f"called its endpoints {result.calls_seen} times and no call could be recorded as a request:{reasons}\n"
            "Do what each reason says, or build with --example ENDPOINT JSON.",
            err=True,
        )
        return
    if not result.checks:
        click.echo(
            "verified: the lock installed and the service started, but no examples were recorded, so no answers "
            "were compared. Call the endpoint in a notebook cell, or build with --example ENDPOINT JSON.",
            err=True,
        )
        return
    click.echo(
        f"verified: {len(result.checks)} examples answered as in the training kernel "
        f"(Python {result.python}, installed in {result.install_seconds:.1f}s)",
        err=True,
    )


def _print_check(check: ExampleCheck) -> None:
    status = "ok  " if check.passed else "FAIL"
    line = f"{status} {check.endpoint} #{check.number} {json.dumps(check.request)[:60]}"
    click.echo(line if check.passed else f"{line}\n     {check.difference}", err=True)


def _setting_options(command: Callable[..., None]) -> Callable[..., None]:
    """A flag for each runtime setting that has one, from the runtime's own table (name, variable, parser, help).

    A flag given is handed to the workers through the setting's variable, as text the runtime parses
    with the same parser; a flag not given leaves the variable, if set, for the runtime to read.
    """
    for setting in reversed([s for s in SETTINGS if s.flag]):
        default = Settings.default(setting.field)
        shown = ", ".join(default) or "none" if isinstance(default, tuple) else default
        help_text = f"{setting.help} [env: {setting.variable}; default: {shown}]"
        if isinstance(default, bool):
            option = click.option(
                f"--{setting.flag}", setting.field, is_flag=True, default=None, help=help_text, allow_from_autoenv=False
            )
        else:
            option = click.option(
                f"--{setting.flag}",
                setting.field,
                multiple=setting.repeatable,
                help=help_text,
                type=_SettingText(setting),
                metavar=setting.field.upper(),
                allow_from_autoenv=False,
            )
        command = option(command)
    return command


if TYPE_CHECKING:  # generic from click 8.4 on; nb2svc supports click 8.1, whose ParamType is not subscriptable
    _TextParamType = click.ParamType[str]
else:
    _TextParamType = click.ParamType


class _SettingText(_TextParamType):
    """A flag's text, checked with the runtime's own parser (the runtime parses the same text again)."""

    name = "text"

    def __init__(self, setting: Setting) -> None:
        self.setting = setting

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            self.setting.parse(str(value))
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)
        return str(value)


_REGISTRY_OPTION = click.option(
    "--registry",
    type=click.Path(path_type=Path),
    help="The registry of deployments.  [default: NB2SVC_REGISTRY, else the user's data directory]",
)


@cli.command("deployments")
@_REGISTRY_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def deployments_command(registry: Path | None, as_json: bool) -> None:
    """List the registry's deployments: their versions (when, from which notebook, which Python) and aliases."""
    from nb2svc.registry import Registry

    with _reporting_errors(as_json, None):
        chosen = Registry(registry)
        listed = chosen.describe()
    if as_json:
        click.echo(json.dumps({"ok": True, "registry": str(chosen.root), "deployments": listed}))
        return
    if not listed:
        click.echo(f"no deployments in {chosen.root}")
    for deployment in listed:
        named: dict[int, list[str]] = {}
        for alias, number in deployment["aliases"].items():
            named.setdefault(number, []).append(alias)
        newest = deployment["versions"][-1]["version"] if deployment["versions"] else None
        for version in deployment["versions"]:
            tags = named.get(version["version"], []) + (["latest"] if version["version"] == newest else [])
            about = version.get("error") or (
                f"{'deployed' if version['source'] == 'deploy' else 'built'} {version['built_at']} "
                f"from {version['notebook'] or 'a live session'}, Python {version['python']}, "
                f"{_verified(version['verified'])}"
            )
            click.echo(f"{deployment['name']:20} {version['version']:>4}  {', '.join(tags):16} {about}")


def _verified(record: dict[str, Any] | None) -> str:
    if record is None:
        return "not verified"
    return f"verified {record['at']}" if record["ok"] else f"FAILED verify {record['at']}"


@cli.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=click.IntRange(min=1))
@_REGISTRY_OPTION
def alias_command(name: str, alias: str, version: int, registry: Path | None) -> None:
    """Point ALIAS (e.g. prod) at VERSION of deployment NAME: /v1/NAME/ALIAS then answers as that version."""
    from nb2svc.registry import Registry

    with _reporting_errors(False, None):
        Registry(registry).set_alias(name, alias, version)
    click.echo(f"{name}/{alias} -> {version}")


@cli.command("remove")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@_REGISTRY_OPTION
def remove_command(name: str, version: int, registry: Path | None) -> None:
    """Remove VERSION of deployment NAME (refused while an alias points at it); its number is never reused."""
    from nb2svc.registry import Registry

    with _reporting_errors(False, None):
        Registry(registry).remove(name, version)
    click.echo(f"removed {name}/{version}")


@cli.command("serve")
@click.argument("service_dir", required=False, type=click.Path(path_type=Path))
@click.option(
    "--registry",
    type=click.Path(path_type=Path),
    help="Serve every deployment and version of this registry instead of one SERVICE_DIR; versions published "
    "meanwhile are added without a restart.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help=f"Port to bind.  [default: 8000; {REGISTRY_PORT} with --registry, where nb2svc.deploy looks]",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds in-flight requests get after SIGTERM.",
)
@click.option(
    "--ray", "use_ray", is_flag=True, help="Deploy on a Ray cluster with Ray Serve (pip install 'nb2svc[ray]')."
)
@click.option("--replicas", type=click.IntRange(min=1), help="With --ray: this many replicas.  [default: 1]")
@click.option("--autoscale", metavar="MIN:MAX", help="With --ray: between MIN and MAX replicas, by Ray's autoscaler.")
@click.option("--address", help="With --ray: the Ray cluster's address.  [default: RAY_ADDRESS, or a local Ray]")
@click.option(
    "--watch",
    is_flag=True,
    help="SERVICE_DIR is a notebook: build it, serve it, and build again on every save of it or of a file it read.",
)
@_PARAMETERS_OPTION
@_PARAMETERS_FILE_OPTION
@_setting_options
def serve_command(
    service_dir: Path | None,
    registry: Path | None,
    host: str,
    port: int | None,
    workers: int,
    graceful_timeout: int,
    use_ray: bool,
    replicas: int | None,
    autoscale: str | None,
    address: str | None,
    watch: bool,
    parameters: tuple[tuple[str, str], ...],
    parameters_files: tuple[Path, ...],
    **given: Any,
) -> None:
    """Serve SERVICE_DIR (a directory written by `nb2svc build`; default: the current one) with uvicorn, or with
    --registry DIR every deployment of a registry at /v1/NAME/VERSION.

    With --ray, SERVICE_DIR is deployed on a Ray cluster with Ray Serve (its ray_app.py), Ray's HTTP proxy on
    --host and --port.

    With --watch, SERVICE_DIR is a notebook (nb2svc serve model.ipynb --watch): each save of it, or of a local
    module or data file it read, builds it again; the new build takes traffic once it is loaded, and a failed
    build leaves the last good one serving.

    The API key is read from NB2SVC_API_KEY only (comma-separated keys), never from a flag.
    """
    _refuse_ray_combinations(use_ray, registry, workers, replicas, autoscale, address)
    if registry is not None and service_dir is not None:
        raise click.UsageError(
            f"serve either SERVICE_DIR ({service_dir}) or --registry {registry}, not both: a registry's "
            "versions are served from its own directories"
        )
    variables = {}
    for setting in SETTINGS:
        value = given.get(setting.field)
        if value is True:
            variables[setting.variable] = "1"
        elif isinstance(value, tuple) and value:
            variables[setting.variable] = ",".join(value)
        elif isinstance(value, str):
            variables[setting.variable] = value
    if watch:
        port = 8000 if port is None else port
        _watch(service_dir, registry, use_ray, workers, host, port, variables, parameters, parameters_files)
        return
    if parameters or parameters_files:
        raise click.UsageError(
            "-p and -f are a notebook's parameters: they go with --watch (nb2svc serve NB.ipynb --watch -p NAME VALUE)"
        )
    if use_ray:
        from nb2svc.ray_serve import RayOptions, parse_autoscale, serve_ray

        with _reporting_errors(False, None):
            bounds = parse_autoscale(autoscale) if autoscale else None
            ray_options = RayOptions(address, replicas, bounds)
            serve_ray(service_dir or Path("."), ray_options, host=host, port=port or 8000, settings=variables)
        return
    from nb2svc.serve import serve, serve_registry

    options: dict[str, Any] = dict(host=host, workers=workers, graceful_timeout=graceful_timeout, settings=variables)
    with _reporting_errors(False, None):
        if registry is not None:
            serve_registry(registry, port=REGISTRY_PORT if port is None else port, **options)
        else:
            serve(service_dir or Path("."), port=8000 if port is None else port, **options)


def _watch(
    notebook: Path | None,
    registry: Path | None,
    use_ray: bool,
    workers: int,
    host: str,
    port: int,
    variables: dict[str, str],
    parameters: tuple[tuple[str, str], ...],
    parameters_files: tuple[Path, ...],
) -> None:
    from nb2svc.watch import WatchReport, watch

    if notebook is None:
        raise click.UsageError("--watch takes the notebook to build and serve: nb2svc serve model.ipynb --watch")
    others = [
        *([f"--registry {registry}"] if registry is not None else []),
        *(["--ray"] if use_ray else []),
        *([f"--workers {workers}"] if workers != 1 else []),
    ]
    if others:
        raise click.UsageError(f"--watch serves one notebook in one process, without {', '.join(others)}")
    os.environ.update(variables)  # the server --watch starts reads its settings from there
    progress = _Progress()

    def say(line: str) -> None:
        progress.end_line()
        click.echo(line, err=True)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stopped by a supervisor as by Ctrl-C: the server and the builds go
    signal.signal(signal.SIGINT, interrupt)  # even where a background shell left Ctrl-C ignored
    with _reporting_errors(False, progress):
        try:
            overrides = _overrides(parameters, parameters_files)
            watch(notebook, WatchReport(say, progress, progress.stage), host=host, port=port, parameters=overrides)
        except KeyboardInterrupt:
            say("stopped")


def _refuse_ray_combinations(
    use_ray: bool, registry: Path | None, workers: int, replicas: int | None, autoscale: str | None, address: str | None
) -> None:
    """Exit 2 with every reason the Ray options cannot be used together."""
    reasons = []
    if use_ray and workers > 1:
        reasons.append(f"--workers {workers} with --ray: Ray Serve runs replicas, ask for them with --replicas")
    if use_ray and registry is not None:
        reasons.append("--registry with --ray: Ray Serve serves one SERVICE_DIR")
    if replicas is not None and autoscale is not None:
        reasons.append("--replicas with --autoscale: give a fixed number or MIN:MAX, not both")
    ray_only = [
        flag
        for flag, value in (("--replicas", replicas), ("--autoscale", autoscale), ("--address", address))
        if value is not None
    ]
    if ray_only and not use_ray:
        reasons.append(f"{', '.join(ray_only)} without --ray: they say how to run on Ray Serve")
    if reasons:
        raise click.UsageError("; ".join(reasons))


@cli.group("export")
def export_group() -> None:
    """Write the files another platform runs a service directory with."""


_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"


def _quantity(ctx: click.Context, param: click.Parameter, value: str) -> str:
    import re

    if not re.match(_QUANTITY, value):
        raise click.BadParameter(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 2Gi)")
    return value


def _setting_pair(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for text in values:
        variable, equals, value = text.partition("=")
        if not equals or not variable:
            raise click.BadParameter(f"{text!r} is not VARIABLE=VALUE (e.g. NB2SVC_TIMEOUT=30)")
        pairs.append((variable, value))
    return tuple(pairs)


@export_group.command("kubernetes")
@click.argument("service_dir", type=click.Path(path_type=Path))
@click.option("--image", required=True, help="The service's container image (built from its Dockerfile).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="YAML file to write.  [default: stdout]")
@click.option(
    "--name",
    help="Name of every object: lower-case letters, digits and '-', starting with a letter (a DNS-1035 label).  "
    "[default: the manifest's name, lower-case, '_' as '-']",
)
@click.option(
    "--replicas",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Replicas at the start, and the autoscaler's minimum.",
)
@click.option(
    "--max-replicas", default=5, show_default=True, type=click.IntRange(min=1), help="The autoscaler's maximum."
)
@click.option(
    "--cpu-utilization",
    default=70,
    show_default=True,
    type=click.IntRange(1, 100),
    help="The autoscaler's target: percent of the CPU request.",
)
@click.option("--cpu-request", default="500m", show_default=True, callback=_quantity, help="CPU each pod asks for.")
@click.option("--memory-request", default="512Mi", show_default=True, callback=_quantity, help="Memory it asks for.")
@click.option("--cpu-limit", default="2", show_default=True, callback=_quantity, help="CPU it may use.")
@click.option("--memory-limit", default="2Gi", show_default=True, callback=_quantity, help="Memory it may use.")
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="VARIABLE=VALUE",
    callback=_setting_pair,
    help="A service setting (e.g. NB2SVC_TIMEOUT=30), checked as the service reads it. Repeatable.",
)
@click.option("--api-key-secret", help="The Secret holding NB2SVC_API_KEY.  [default: NAME-api-key]")
@click.option("--api-key-secret-key", default="api-key", show_default=True, help="Its key.")
@click.option("--require-api-key", is_flag=True, help="Pods do not start without the Secret.  [default: optional]")
@click.option(
    "--load-seconds",
    type=click.FloatRange(min=0),
    help="The model's load time, to size the startup probe.  [default: measured by loading the service here]",
)
@click.option("--kserve", is_flag=True, help="A KServe InferenceService (v1beta1) instead.")
def export_kubernetes_command(
    service_dir: Path,
    image: str,
    output: Path | None,
    cpu_request: str,
    memory_request: str,
    cpu_limit: str,
    memory_limit: str,
    **options: Any,
) -> None:
    """Kubernetes objects that run SERVICE_DIR's image: a Deployment, Service, HorizontalPodAutoscaler and
    PodDisruptionBudget, or with --kserve a KServe InferenceService. The API key comes from a Secret."""
    from nb2svc.kubernetes import KubernetesOptions, Resources, kubernetes_objects, to_yaml

    resources = Resources(cpu_request, memory_request, cpu_limit, memory_limit)
    with _reporting_errors(False, None):
        text = to_yaml(kubernetes_objects(service_dir, KubernetesOptions(image, resources=resources, **options)))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


class _Progress:
    """Prints one line per cell and per stage on stderr: what starts, then its time when it ends."""

    def __init__(self) -> None:
        self.open_line = False

    def stage(self, progress: StageProgress) -> None:
        timing = f" ({progress.seconds or 0:.2f}s{', ' + progress.note if progress.note else ''})"
        if progress.seconds is not None and self.open_line:  # the stage's own line, still open: end it
            click.echo(timing, err=True)
            self.open_line = False
            return
        self.end_line()
        if progress.warning:
            click.echo(f"warning: {progress.text}", err=True)
        elif progress.seconds is None:
            click.echo(progress.text, nl=False, err=True)
            self.open_line = True
        else:
            click.echo(progress.text + timing, err=True)

    def __call__(self, progress: CellProgress) -> None:
        if progress.seconds is None:
            self.end_line()
            text = progress.cell.first_line
            text = text if len(text) <= 60 else text[:57] + "..."
            click.echo(
                f"  [{progress.position}/{progress.total}] cell {progress.cell.number}: {text}", nl=False, err=True
            )
            self.open_line = True
        else:
            click.echo(f"  ({progress.seconds:.2f}s)", err=True)
            self.open_line = False

    def end_line(self) -> None:
        if self.open_line:
            click.echo(err=True)
            self.open_line = False


@contextmanager
def _reporting_errors(as_json: bool, progress: _Progress | None) -> Iterator[None]:
    try:
        yield
    except Nb2svcError as exc:
        if progress is not None:
            progress.end_line()
        if as_json:
            click.echo(json.dumps({"ok": False, "error": exc.to_dict()}))
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # a usage error found late (an --example that is not JSON)
        if as_json:
            click.echo(json.dumps({"ok": False, "error": _usage_error(exc)}))
            exc.reported = True  # type: ignore[attr-defined]  # main() prints no second object
        raise
    except Exception as exc:  # a bug of nb2svc's: keep the traceback, and the promise of one JSON object
        if progress is not None:
            progress.end_line()
        if as_json:
            message = f"internal error {type(exc).__name__}: {exc}"
            click.echo(
                json.dumps({"ok": False, "error": {"type": "internal_error", "exit_code": 1, "message": message}})
            )
        raise


def main() -> None:
    """The ``nb2svc`` command. With ``--json``, a command line click refuses (an unknown option, a missing
    argument) also prints the one JSON object ``--json`` promises, ``{"ok": false, "error": {"type": "usage",
    ...}}``, before click's message on stderr and exit 2."""
    try:
        code = cli.main(prog_name="nb2svc", standalone_mode=False)
    except click.ClickException as exc:
        if "--json" in sys.argv[1:] and not getattr(exc, "reported", False):
            click.echo(json.dumps({"ok": False, "error": _usage_error(exc)}))
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: click.ClickException) -> dict[str, Any]:
    return {"type": "usage", "exit_code": exc.exit_code, "message": exc.format_message()}
