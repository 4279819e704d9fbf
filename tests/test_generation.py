"""Fast layer: every combination bakes into the right files, with nothing
left of the template, every data file parses and the code passes lint."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

from .conftest import LEFTOVER_JINJA, SUPPORTED, TEMPLATE

# The default project, minus the package folder (its name is an answer).
BASE_FILES = {
    ".cookiecutter.json",
    ".dockerignore",
    ".flake8",
    ".github/dependabot.yml",
    ".github/workflows/pr.yml",
    ".gitignore",
    "Dockerfile",
    "Makefile",
    "README.md",
    "SECURITY.md",
    "data/README.md",
    "data/iris.csv",
    "docs/performance.md",
    "pyproject.toml",
    "requirements-dev.txt",
    "requirements.txt",
}
PACKAGE_FILES = {
    "__init__.py",
    "api/__init__.py",
    "api/batching.py",
    "api/cache.py",
    "api/main.py",
    "api/schemas.py",
    "bench.py",
    "gunicorn_conf.py",
    "json_rows.py",
    "local_server.py",
    "model.py",
    "monitoring/__init__.py",
    "monitoring/drift.py",
    "monitoring/metrics.py",
    "monitoring/prediction_log.py",
    "monitoring/report.py",
    "predict.py",
    "quantize.py",
    "settings.py",
    "soak.py",
    "timing.py",
    "train.py",
}
DEPLOY_WORKFLOWS = {
    ".github/workflows/staging.yml",
    ".github/workflows/production.yml",
}
# What every project has under deploy/, whatever its target.
SHARED_DEPLOY = (
    "deploy/prometheus/",
    "deploy/grafana/",
    "deploy/smoke-test.sh",
)


def split_files(project):
    """(package files, test files, deploy files, everything else)."""
    package = f"src/{project.path.name.replace('-', '_')}/"
    groups = {"package": set(), "tests": set(), "deploy": set(), "rest": set()}
    for name in project.files():
        if name.startswith(package):
            groups["package"].add(name[len(package) :])
        elif name.startswith("tests/"):
            groups["tests"].add(name)
        elif name.startswith("deploy/"):
            groups["deploy"].add(name)
        else:
            groups["rest"].add(name)
    return groups


@pytest.mark.parametrize("answers", SUPPORTED)
def test_combination_has_exactly_the_expected_files(bake, answers):
    project = bake(**answers)
    groups = split_files(project)
    cloud = answers["cloud"]
    deployed = cloud != "none"
    workflows = DEPLOY_WORKFLOWS if deployed else set()
    assert groups["rest"] == BASE_FILES | workflows
    # Production's script, with production.yml only.
    assert ("deploy/tested-digest.sh" in groups["deploy"]) == deployed
    assert groups["package"] == PACKAGE_FILES
    assert "tests/conftest.py" in groups["tests"]
    own_deploy = [
        name for name in groups["deploy"] if not name.startswith(SHARED_DEPLOY)
    ]
    assert all(
        name.startswith(f"deploy/{cloud}/")
        for name in own_deploy
        if name != "deploy/tested-digest.sh"
    )
    assert bool(own_deploy) == deployed
    assert not (project.path / "requirements").exists()


@pytest.mark.parametrize("answers", SUPPORTED)
def test_no_template_syntax_is_left(bake, answers):
    project = bake(**answers)
    leftovers = [
        name
        for name, text in project.text_files()
        if LEFTOVER_JINJA.search(text)
    ]
    assert leftovers == []


@pytest.mark.parametrize("answers", SUPPORTED)
def test_every_data_file_parses(bake, answers):
    project = bake(**answers)
    for name in project.files():
        if name.endswith((".yml", ".yaml")):
            assert project.yaml(name), name
        elif name.endswith(".toml"):
            assert project.toml(name), name
        elif name.endswith(".json"):
            project.json(name)


@pytest.mark.parametrize("answers", SUPPORTED)
def test_generated_code_passes_its_own_lint(bake, answers):
    project = bake(**answers)
    for tool in (
        ["flake8", "src", "tests"],
        ["black", "--check", "--quiet", "src", "tests"],
        ["isort", "--check-only", "--quiet", "src", "tests"],
    ):
        project.run(sys.executable, "-m", *tool)


def test_the_longest_allowed_name_still_passes_lint(bake):
    from hooks.pre_gen_project import MAX_NAME

    project = bake(project_name="a" * MAX_NAME)
    assert len(project.path.name) == MAX_NAME
    for tool in (["flake8"], ["black", "--check", "--quiet"]):
        project.run(sys.executable, "-m", *tool, "src", "tests")


def test_answers_reach_the_generated_files(bake):
    project = bake(
        project_name="Sunflower Sorter",
        description="Sorts sunflowers by size.",
        author_name="Ada Lovelace",
        author_email="ada@example.org",
        version="2.1.0",
    )
    assert project.path.name == "sunflower-sorter"
    meta = project.toml("pyproject.toml")["project"]
    assert meta["name"] == "sunflower-sorter"
    assert meta["version"] == "2.1.0"
    assert meta["description"] == "Sorts sunflowers by size."
    assert meta["authors"] == [
        {"name": "Ada Lovelace", "email": "ada@example.org"}
    ]
    assert (project.path / "src/sunflower_sorter/api/main.py").is_file()
    assert "# Sunflower Sorter" in project.read("README.md")
    for name, text in project.text_files():
        for ours in ("Iris Classifier", "iris-classifier", "iris_classifier"):
            assert ours not in text, f"{ours!r} left in {name}"


def test_answers_file_replays_to_the_same_project(bake, tmp_path):
    project = bake(project_name="Replay Me", cloud="kubernetes")
    replayed = cookiecutter(
        str(TEMPLATE),
        replay=str(project.path / ".cookiecutter.json"),
        output_dir=str(tmp_path),
    )
    again = type(project)(replayed, project.answers)
    assert again.files() == project.files()
    for name, text in project.text_files():
        assert again.read(name) == text, name


def test_answers_file_records_every_question(bake):
    project = bake(
        accelerator="gpu", quantize_int8=True, cloud="gcp-cloud-run"
    )
    answers = project.json(".cookiecutter.json")["cookiecutter"]
    questions = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    assert {k for k in questions if not k.startswith("_")} <= set(answers)
    assert answers["accelerator"] == "gpu" and answers["quantize_int8"] is True


@pytest.mark.parametrize("init_git", [False, True])
def test_git_init_only_when_asked(bake, init_git):
    project = bake(init_git=init_git)
    assert (project.path / ".git").is_dir() == init_git
    if init_git:  # on main, the branch the workflows run on
        head = project.run("git", "symbolic-ref", "HEAD").stdout
        assert head.strip() == "refs/heads/main"
        staged = project.run("git", "diff", "--cached", "--name-only")
        assert "Makefile" in staged.stdout.split()


def test_git_init_leaves_a_project_inside_a_repository_to_it(tmp_path):
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    made = Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={"init_git": True},
            output_dir=str(tmp_path),
        )
    )
    assert made.is_dir() and not (made / ".git").exists()


def test_make_help_lists_the_targets(bake):
    project = bake()
    result = project.run("make")
    for target in (
        "install", "install-dev", "build", "train", "test", "check",
        "format", "clean", "production", "bench", "drift-report", "audit",
    ):  # fmt: skip
        assert f"make {target} " in result.stdout


def test_make_uses_the_projects_virtualenv_where_there_is_one(bake):
    project = bake()
    assert (
        "\npython -m pytest"
        in "\n"
        + project.run("make", "--no-print-directory", "-n", "test").stdout
    )
    venv_python = project.path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("")
    dry_run = project.run("make", "--no-print-directory", "-n", "test").stdout
    assert dry_run.startswith(".venv/bin/python -m pytest")


def test_a_failed_training_run_leaves_no_model_that_looks_up_to_date(
    bake, tmp_path
):
    """A run that wrote model.pt and then failed: make deletes the file, so
    the next `make train` trains again instead of "Nothing to be done"."""
    project = bake()
    fails = tmp_path / "fails.sh"
    fails.write_text(
        "#!/bin/sh\nmkdir -p artifacts\n: > artifacts/model.pt\nexit 1\n"
    )
    fails.chmod(0o755)
    failed = project.run("make", "train", f"PYTHON={fails}", check=False)
    assert failed.returncode != 0
    assert not (project.path / "artifacts" / "model.pt").exists()


def test_the_int8_model_is_made_again_when_its_scheme_changes(bake):
    """quantize_for() in predict.py is the scheme: editing it is a reason
    to quantize again, as editing quantize.py is."""
    project = bake()
    package = project.path / "src" / project.path.name.replace("-", "_")
    artifacts = project.path / "artifacts"
    artifacts.mkdir()
    names = ("model.pt", "preprocessing.json", "reference.csv")
    for name in (*names, "model-int8.pt"):
        (artifacts / name).write_text("")
    now = time.time()
    for name in names:  # made after the sources, the int8 file last
        os.utime(artifacts / name, (now + 10, now + 10))
    os.utime(artifacts / "model-int8.pt", (now + 20, now + 20))

    def plan() -> str:
        return project.run("make", "-sn", "quantize", "PYTHON=py").stdout

    assert ".quantize" not in plan()
    os.utime(package / "predict.py", (now + 30, now + 30))
    assert "py -m" in plan() and ".quantize" in plan()


def make_environment(project, unset=()) -> dict[str, str]:
    """The environment make gives its recipes (GNU make's --eval), started
    without the variables in `unset`."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    lines = subprocess.run(
        ["make", "-s", "--eval", "show-env: ; @env", "show-env"],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_make_leaves_settings_to_the_environment_and_dot_env(bake):
    """PORT and the like come from the environment or .env (pydantic
    reads both, the environment first): make must not set them."""
    project = bake()
    settings = ("PORT", "WEB_CONCURRENCY", "QUANTIZE_INT8")
    seen = make_environment(project, unset=settings)
    assert seen["PYTHONPATH"] == "src" and seen["ARTIFACTS_DIR"] == "artifacts"
    assert not set(settings) & set(seen)


@pytest.mark.parametrize("generated_with", [False, True])
def test_quantize_int8_picks_the_model_make_builds(bake, generated_with):
    """The words pydantic's bool reads (any case), so the service never
    looks for a model make did not build."""
    project = bake(quantize_int8=generated_with)
    for value, builds_int8 in [
        (None, generated_with),
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("Yes", True),
        ("ON", True),
        ("y", True),
        ("T", True),
        ("No", False),
        ("off", False),
    ]:
        env = {} if value is None else {"QUANTIZE_INT8": value}
        plan = project.run("make", "-n", "train", env=env).stdout
        assert ("quantize --artifacts" in plan) == builds_int8, (value, plan)


@pytest.mark.parametrize(
    "lost", ["model.pt", "preprocessing.json", "reference.csv"]
)
def test_make_trains_again_when_a_served_artifact_is_missing(bake, lost):
    project = bake()
    artifacts = project.path / "artifacts"
    artifacts.mkdir()
    for name in ("model.pt", "preprocessing.json", "reference.csv"):
        (artifacts / name).write_bytes(b"")  # newer than data and code
    assert "train --out" not in project.run("make", "-n", "train").stdout
    (artifacts / lost).unlink()
    assert "train --out" in project.run("make", "-n", "production").stdout


def test_make_clean_keeps_the_virtualenv(bake):
    """Its compiled modules: where PYTHONDONTWRITEBYTECODE is set they are
    never written again, and every import compiles (seconds for torch)."""
    project = bake()
    package = project.path / "src" / project.path.name.replace("-", "_")
    kept = project.path / ".venv/lib/site-packages/x/__pycache__/x.pyc"
    removed = package / "__pycache__/settings.pyc"
    for cached in (kept, removed):
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(b"")
    (project.path / "artifacts").mkdir()
    project.run("make", "clean")
    assert kept.exists()
    assert not removed.exists() and not (project.path / "artifacts").exists()


@pytest.mark.parametrize("accelerator", ["cpu", "gpu"])
def test_readme_documents_every_setting(bake, accelerator):
    project = bake(accelerator=accelerator)
    package = project.path.name.replace("-", "_")
    settings = project.read(f"src/{package}/settings.py")
    fields = re.findall(
        r"^    ([a-z_0-9]+): ", settings.split("class Settings")[1], re.M
    )
    assert len(fields) > 20
    readme = project.read("README.md")
    missing = [f for f in fields if f"| `{f.upper()}` |" not in readme]
    assert not missing, missing


def test_settings_follow_the_options(bake):
    gpu = bake(accelerator="gpu", quantize_int8=True)
    settings = gpu.read(f"src/{gpu.path.name.replace('-', '_')}/settings.py")
    assert 'device: Literal["auto", "cpu", "cuda"] = "cuda"' in settings
    assert "quantize_int8: bool = True" in settings
    assert "torchao" in gpu.read("requirements.txt")
    cpu = bake()
    assert "torchao" not in cpu.read("requirements.txt")
    assert "whl/cpu" in cpu.read("Makefile")
    assert "whl/cu" in gpu.read("Makefile")


def test_lock_files_are_hashed_and_leave_torch_to_the_makefile(bake):
    project = bake()
    for name in ("requirements.txt", "requirements-dev.txt"):
        text = project.read(name)
        assert "--hash=sha256:" in text
        assert "\ntorch==" not in text
        assert "--index-url" not in text and "--find-links" not in text


def test_template_hooks_are_valid_python():
    for hook in ("pre_gen_project.py", "post_gen_project.py"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "py_compile",
                str(TEMPLATE / "hooks" / hook),
            ],
            check=True,
        )
