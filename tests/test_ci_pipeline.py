"""docs/ci: the GitHub Actions workflow and the plain shell script users copy, held to the CLI they call.

The workflow is parsed as YAML and its `run:` steps are run in order with bash, as a runner would (without GitHub:
`uses:` steps and the install step are left out), against the example notebook with this checkout's nb2svc; the
script runs the same nb2svc commands. docs/ci.md must quote both files as they are, and its table of exit codes must
list those of nb2svc/errors.py, no more, no fewer.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from nb2svc import errors
from nb2svc.cli import cli
from nb2svc.locking.lock import default_cache_dir
from nb2svc.runtime.manifest import read_manifest

from helpers import FIXTURES, ROOT, local_base_image, podman

WORKFLOW = ROOT / "docs" / "ci" / "nb2svc.yml"
SCRIPT = ROOT / "docs" / "ci" / "nb2svc.sh"
CI_MD = ROOT / "docs" / "ci.md"
BIN = Path(sys.executable).parent  # this checkout's .venv/bin: its nb2svc comes first on PATH
NOTEBOOK = "linear_regression.ipynb"
SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECTIONS = {">", ">>", "<"}
SHELL_WORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "[", ":", "set", "echo", "export"}


def load_workflow() -> dict[Any, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(workflow, dict)
    return workflow


def steps() -> list[dict[str, Any]]:
    return list(load_workflow()["jobs"]["service"]["steps"])


def commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, each as its words (redirections and assignments dropped), those of
    `$(...)` included, in order."""
    found: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        while substitution := re.search(r"\$\(([^()]*)\)", line):
            found += commands(substitution.group(1))
            line = line[: substitution.start()] + "SUBSTITUTED" + line[substitution.end() :]
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        tokens = iter([*lexer, ";"])
        for token in tokens:
            if token in REDIRECTIONS:
                next(tokens)
            elif token in SEPARATORS:
                while words and (words[0] in {"if", "then", "else", "elif", "do"} or re.match(r"\w+=", words[0])):
                    words.pop(0)
                found += [words] if words and words[0] != "fi" else []
                words = []
            else:
                words.append(token)
    return found


def nb2svc_commands(script: str) -> list[list[str]]:
    return [words for words in commands(script) if words[0] == "nb2svc"]


def parse_nb2svc(words: list[str]) -> tuple[str, click.Context]:
    """The subcommand's name and its context, parsed by click as `nb2svc` would (an unknown option raises)."""
    command: click.Command = cli
    args = list(words[1:])
    while isinstance(command, click.Group):
        name = args.pop(0)
        assert name in command.commands, f"nb2svc has no command {name!r}: {' '.join(words)}"
        command = command.commands[name]
    return name, command.make_context(name, args)


def run_steps() -> list[dict[str, Any]]:
    return [step for step in steps() if "run" in step]


def install_step() -> dict[str, Any]:
    (step,) = [step for step in run_steps() if "pip install" in step["run"]]
    return step


def test_the_workflow_is_a_github_actions_workflow_with_the_cache_and_the_artifact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workflow = load_workflow()
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true, and so does PyYAML
    assert set(triggers) == {"push", "pull_request"}
    job = workflow["jobs"]["service"]
    assert job["runs-on"] == "ubuntu-latest"
    uses = [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]
    assert uses == ["actions/checkout", "actions/setup-python", "actions/cache", "actions/upload-artifact"]
    assert all(("uses" in step) != ("run" in step) for step in job["steps"])
    by_action = {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}
    cache = by_action["actions/cache"]["with"]
    monkeypatch.delenv("NB2SVC_CACHE_DIR")  # set for the session by conftest
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert f"~/{default_cache_dir().parent.relative_to(Path.home())}" in cache["path"].split()  # ~/.cache/nb2svc
    assert "hashFiles(env.NOTEBOOK, 'requirements.txt')" in cache["key"]
    assert cache["key"].startswith(cache["restore-keys"])
    artifact = by_action["actions/upload-artifact"]
    assert artifact["if"] == "always()" and artifact["with"]["path"].split() == ["service", "build.json", "verify.json"]
    for output in job["outputs"].values():  # each is written by the step it names
        reference = re.fullmatch(r"\$\{\{ steps\.(\w+)\.outputs\.(\w+) \}\}", output)
        assert reference, output
        step_id, name = reference.groups()
        (step,) = [step for step in job["steps"] if step.get("id") == step_id]
        assert f'echo "{name}=' in step["run"]


def test_every_run_step_names_commands_and_flags_that_exist() -> None:
    for step in run_steps():
        assert "${{" not in step["run"], "a run: step reads the workflow's values from the environment"
        for words in commands(step["run"]):
            assert words[0] == "nb2svc" or words[0] in SHELL_WORDS or shutil.which(words[0]), words
    parsed = [parse_nb2svc(words) for words in nb2svc_commands("\n".join(step["run"] for step in run_steps()))]
    assert [name for name, _ in parsed] == ["build", "verify", "image"]
    assert all(context.params["as_json"] for _, context in parsed)
    build, verify, image = (context.params for _, context in parsed)
    assert build["notebook"] == Path("$NOTEBOOK") and build["output"] == verify["service_dir"] == image["service_dir"]
    assert shlex.split(install_step()["run"])[:4] == ["python", "-m", "pip", "install"]
    assert "nb2svc" in shlex.split(install_step()["run"])


def test_a_wrong_flag_would_be_caught() -> None:
    """What the check above rests on: click refuses an option the command does not have."""
    with pytest.raises(click.NoSuchOption):
        parse_nb2svc(["nb2svc", "verify", "service", "--jsn"])


def test_the_script_runs_the_workflows_nb2svc_commands_and_is_bash() -> None:
    workflow = "\n".join(step["run"] for step in run_steps())
    assert nb2svc_commands(SCRIPT.read_text()) == nb2svc_commands(workflow)
    for words in commands(SCRIPT.read_text()):
        assert words[0] == "nb2svc" or words[0] in SHELL_WORDS or shutil.which(words[0]), words
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True).returncode == 0
    assert "set -euo pipefail" in SCRIPT.read_text().splitlines()


def fenced_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", markdown, re.MULTILINE | re.DOTALL)


def test_ci_md_quotes_the_workflow_and_the_script_as_they_are() -> None:
    doc = CI_MD.read_text()
    assert fenced_blocks(doc, "yaml") == [WORKFLOW.read_text()]
    assert fenced_blocks(doc, "bash") == [SCRIPT.read_text()]


def test_the_exit_code_table_lists_every_exit_code_of_errors_py_and_no_other() -> None:
    kinds = {
        cls.exit_code: cls.kind
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.Nb2svcError) and cls.__module__ == errors.__name__
    }
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", CI_MD.read_text(), re.MULTILINE)
    assert [int(code) for code, _ in rows] == sorted(kinds)
    assert {int(code): kind for code, kind in rows} == kinds


@dataclass
class Run:
    """A folder like a checkout holding the example notebook, and the environment a runner's steps get."""

    folder: Path
    env: dict[str, str]

    def step(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``script`` as a runner runs a `run:` step (bash -e of a file); an error says what it printed."""
        path = self.folder.parent / "step.sh"
        path.write_text(script)
        command = ["bash", "--noprofile", "--norc", "-e", str(path)]
        return subprocess.run(command, cwd=self.folder, env={**self.env, **env}, capture_output=True, text=True)

    def json(self, name: str) -> Any:
        return json.loads((self.folder / name).read_text())


def a_run(tmp_path: Path, notebook: Path = FIXTURES / NOTEBOOK) -> Run:
    folder = tmp_path / "checkout"
    folder.mkdir()
    shutil.copy(notebook, folder)
    env = {
        **os.environ,  # NB2SVC_CACHE_DIR is the session's (conftest): its locks are reused
        **load_workflow()["env"],
        "NOTEBOOK": notebook.name,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
    }
    return Run(folder, env)


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The workflow's run: steps up to the image, in order, in a folder holding the example notebook."""
    run = a_run(tmp_path_factory.mktemp("workflow"))
    (image,) = [step for step in run_steps() if "nb2svc image" in step["run"]]
    for step in run_steps()[: run_steps().index(image)]:
        if step != install_step():  # installing would replace this checkout's nb2svc
            done = run.step(step["run"], **step.get("env", {}))
            assert done.returncode == 0, f"{step.get('name')}: {done.stdout}{done.stderr}"
    return run


@pytest.mark.e2e
@pytest.mark.network  # the build locks against the package index (the lock cache spares a rebuild)
def test_the_workflows_steps_build_and_verify_the_example(workflow_run: Run) -> None:
    built = workflow_run.json("build.json")
    service = workflow_run.folder / "service"
    assert built["ok"] is True and Path(built["service_dir"]) == service.resolve()
    manifest = read_manifest(service)
    assert built["manifest"]["version"] == manifest.version and built["manifest"]["name"] == manifest.name
    outputs = Path(workflow_run.env["GITHUB_OUTPUT"]).read_text().splitlines()
    assert outputs == [f"service_dir={service.resolve()}", f"name={manifest.name}", f"version={manifest.version}"]
    verified = workflow_run.json("verify.json")
    assert verified["ok"] is True and verified["examples"]
    assert all(example["passed"] for example in verified["examples"])
    assert json.loads((service / "verified.json").read_text())["model_version"] == manifest.version


@pytest.fixture(scope="module")
def image_step(workflow_run: Run) -> Iterator[tuple[subprocess.CompletedProcess[str], dict[str, str]]]:
    """The workflow's image step after the others, with podman on the local base (by their variables, as the step
    sets the tool); the image removed after."""
    (step,) = [step for step in run_steps() if "nb2svc image" in step["run"]]
    base = local_base_image()
    env = {**step.get("env", {}), "NB2SVC_IMAGE_TOOL": "podman", "NB2SVC_IMAGE_BASE_IMAGE": base}
    done = workflow_run.step(step["run"], **env)
    try:
        yield done, env
    finally:
        if (workflow_run.folder / "image.json").exists():
            podman("rmi", "--force", workflow_run.json("image.json").get("image_id", "none"))


@pytest.mark.e2e
@pytest.mark.network  # the wheels come from the package index
@pytest.mark.container
def test_the_workflows_image_step_builds_the_image_named_after_the_manifest(
    workflow_run: Run, image_step: tuple[subprocess.CompletedProcess[str], dict[str, str]]
) -> None:
    done, env = image_step
    assert done.returncode == 0, done.stdout + done.stderr
    (step,) = [step for step in run_steps() if "nb2svc image" in step["run"]]
    assert step["env"]["NB2SVC_IMAGE_TOOL"] == "docker"  # on GitHub's runners; podman here
    image = workflow_run.json("image.json")
    manifest = read_manifest(workflow_run.folder / "service")
    assert image["ok"] is True and image["tool"] == "podman" and image["base_image"] == env["NB2SVC_IMAGE_BASE_IMAGE"]
    assert image["tag"] == f"{manifest.name}:{manifest.version}"
    labels = podman("image", "inspect", "--format", "{{json .Config.Labels}}", image["image_id"])
    assert json.loads(labels.stdout)["org.opencontainers.image.version"] == manifest.version


@pytest.mark.e2e
@pytest.mark.network  # the build locks against the package index (the lock cache spares a rebuild)
def test_the_script_builds_and_verifies_the_example(tmp_path: Path) -> None:
    run = a_run(tmp_path)
    done = subprocess.run(
        ["bash", str(SCRIPT)], cwd=run.folder, env={**run.env, "BUILD_IMAGE": "no"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = read_manifest(run.folder / "service")
    service = (run.folder / "service").resolve()
    assert done.stdout == f"built {manifest.name} version {manifest.version} in {service}\n"
    assert run.json("build.json")["ok"] is True and run.json("verify.json")["ok"] is True
    assert not (run.folder / "image.json").exists()


@pytest.mark.parametrize("runner", ["workflow", "script"])
def test_a_broken_notebook_fails_the_build_step_with_its_exit_code_and_says_why(tmp_path: Path, runner: str) -> None:
    run = a_run(tmp_path, FIXTURES / "cell_error.ipynb")
    if runner == "workflow":
        (build,) = [step for step in run_steps() if "nb2svc build" in step["run"]]
        done = run.step(build["run"])
    else:
        done = subprocess.run(["bash", str(SCRIPT)], cwd=run.folder, env=run.env, capture_output=True, text=True)
    assert done.returncode == errors.CellFailed.exit_code, done.stdout + done.stderr
    error = run.json("build.json")
    assert error["ok"] is False and error["error"]["type"] == errors.CellFailed.kind
    assert not (run.folder / "service").exists() and not (run.folder / "verify.json").exists()
