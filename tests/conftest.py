"""Shared pieces of the template's tests: the option combinations and a
small wrapper around a baked project so each test reads as one sentence."""

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parents[1]
CACHE = TEMPLATE / ".cache"

DEFAULTS = {"accelerator": "cpu", "quantize_int8": False, "cloud": "none"}


def combination(accelerator, int8, cloud):
    answers = {
        "accelerator": accelerator,
        "quantize_int8": int8,
        "cloud": cloud,
    }
    name = f"{accelerator}-{'int8' if int8 else 'fp32'}-{cloud}"
    return pytest.param(answers, id=name)


CLOUDS = [
    "none",
    "gcp-cloud-run",
    "aws-ecs-fargate",
    "azure-container-apps",
    "kubernetes",
]
GPU_CLOUDS = [c for c in CLOUDS if c != "aws-ecs-fargate"]

# Every value of every option, every target with and without GPU where it
# has GPUs, int8 on and off for both accelerators.
SUPPORTED = [
    combination(accelerator, int8, cloud)
    for accelerator, clouds in (("cpu", CLOUDS), ("gpu", GPU_CLOUDS))
    for cloud in clouds
    for int8 in (False, True)
]

UNSUPPORTED = [
    pytest.param(
        {"accelerator": "gpu", "cloud": "aws-ecs-fargate"},
        "cannot run GPUs",
        id="gpu-on-fargate",
    ),
]

# A narrow pattern: GitHub's ${{ ... }} must survive, cookiecutter's not.
LEFTOVER_JINJA = re.compile(r"\{\{-? *cookiecutter\.|\{%-? *(if|for|endif)\b")


class Project:
    """A baked project, with the questions tests ask of it."""

    def __init__(self, path: Path, answers: dict):
        self.path = Path(path)
        self.answers = answers

    def __repr__(self):
        return f"Project({self.path.name}, {self.answers})"

    def has_file(self, name: str) -> bool:
        return (self.path / name).is_file()

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def files(self) -> set[str]:
        return {
            str(p.relative_to(self.path))
            for p in self.path.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    def text_files(self):
        for name in sorted(self.files()):
            if name.endswith((".csv", ".png")):
                continue
            yield name, self.read(name)

    def yaml(self, name: str):
        return list(yaml.safe_load_all(self.read(name)))

    def toml(self, name: str) -> dict:
        return tomllib.loads(self.read(name))

    def json(self, name: str):
        return json.loads(self.read(name))

    def run(self, *command: str, env=None, timeout=900, check=True):
        """Run a command in the project; show its output when it fails."""
        result = subprocess.run(
            command,
            cwd=self.path,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} failed ({result.returncode}) in "
                f"{self.path}:\n{result.stdout[-4000:]}\n"
                f"{result.stderr[-4000:]}"
            )
        return result


@pytest.fixture
def bake(cookies):
    """Bake with the given answers; fail loudly if the bake fails."""

    def bake_with(**answers) -> Project:
        result = cookies.bake(extra_context=answers)
        assert result.exception is None, result.exception
        assert result.exit_code == 0
        return Project(result.project_path, {**DEFAULTS, **answers})

    return bake_with


@pytest.fixture(scope="session")
def deep_env(tmp_path_factory):
    """One virtualenv for the deep layer, made by `make install-dev` of a
    default CPU project, then of a GPU one (whose locks add torchao); torch
    from this machine's wheel (TORCH_PIP_ARGS=).

    The deep layer runs on two xdist workers: the first one in makes the
    virtualenv under a file lock, the other finds it made for the same
    lock files and leaves it alone (pip never runs under a running test).
    """
    from cookiecutter.main import cookiecutter

    venv = CACHE / "deep-venv"
    python = venv / "bin" / "python"
    out = tmp_path_factory.mktemp("env-project")
    projects = [
        Project(
            cookiecutter(
                str(TEMPLATE),
                no_input=True,
                output_dir=str(out / accelerator),
                extra_context={"accelerator": accelerator},
            ),
            {},
        )
        for accelerator in ("cpu", "gpu")
    ]
    wanted = locks_digest(projects)
    made_for = venv / "made-for"
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / "deep-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = made_for.read_text() if made_for.exists() else ""
        if made != wanted or not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], check=True
            )
            for project in projects:
                install = ["make", "install-dev", f"PYTHON={python}"]
                project.run(*install, "TORCH_PIP_ARGS=")
            made_for.write_text(wanted)
    return {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "PYTHON": str(python),
    }


def locks_digest(projects) -> str:
    """What a virtualenv made by these projects' `make install-dev` holds:
    their lock files and the Makefile that pins torch."""
    digest = hashlib.sha256()
    for project in projects:
        for name in ("requirements.txt", "requirements-dev.txt", "Makefile"):
            digest.update(project.read(name).encode())
    return digest.hexdigest()


def make(project, target, deep_env, *args, **kwargs):
    return project.run(
        "make", target, f"PYTHON={deep_env['PYTHON']}", *args,
        env=deep_env, **kwargs,
    )  # fmt: skip


def workflow_trigger(workflow: dict) -> dict:
    """A workflow's `on:` (PyYAML reads the bare key `on` as True)."""
    return workflow.get("on", workflow.get(True))


def generated_module(relative_path: str):
    """A module of the template's project that holds no Jinja, loaded from
    the template itself: one copy of the code, not a twin to keep in step."""
    path = TEMPLATE / "{{cookiecutter.project_slug}}" / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Ports held until the server binds them (see why there): the deep layer
# runs the projects' servers beside ours.
free_port = generated_module(
    "src/{{cookiecutter.package_name}}/local_server.py"
).free_port


def http(method, url, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data, {"content-type": "application/json"}, method=method
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def wait_ready(url, process, seconds=90, log_path=None):
    """/ready's answer, once it says ready. A failure shows the output:
    its stdout pipe, or the file at log_path (for a chatty process, which
    would fill a pipe nobody reads)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = tail(log_path) if log_path else process.stdout.read()
            pytest.fail(f"server exited early: {output}")
        try:
            return http("GET", url + "/ready")
        except OSError:
            time.sleep(0.2)
    log = f":\n{tail(log_path)}" if log_path else ""
    pytest.fail(f"server not ready in {seconds} s{log}")


def tail(log_path) -> str:
    return log_path.read_text(errors="replace")[-4000:]


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group; SIGKILL after 30 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:  # all gone already
        return
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
