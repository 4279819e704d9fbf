"""Apply the chosen options to the generated project: a decision table.

`main()` reads like the list of options; each one maps to a small function
that keeps the files of the chosen value and removes the others.
"""

import json
import shutil
import subprocess
from pathlib import Path

CLOUD_TARGETS = (
    "gcp-cloud-run",
    "aws-ecs-fargate",
    "azure-container-apps",
    "kubernetes",
)
DEPLOY_WORKFLOWS = ("staging.yml", "production.yml")
PROMOTED_DIGEST_SCRIPT = "deploy/tested-digest.sh"
ANSWERS_FILE = ".cookiecutter.json"
PUSH_TO_MAIN = "  push:\n    branches: [main]\n"


def keep_cloud_target(project: Path, cloud: str) -> None:
    """deploy/<target>/ of the chosen target only; its workflows go live."""
    for target in CLOUD_TARGETS:
        if target != cloud:
            shutil.rmtree(project / "deploy" / target, ignore_errors=True)
    workflows = project / "deploy" / cloud / "workflows"
    live = project / ".github/workflows"
    if not workflows.is_dir():  # no target (nor, with -f, an earlier one's)
        for workflow in DEPLOY_WORKFLOWS:
            (live / workflow).unlink(missing_ok=True)
        # Production's own script: it reads the records of staging runs.
        (project / PROMOTED_DIGEST_SCRIPT).unlink(missing_ok=True)
        return
    for workflow in DEPLOY_WORKFLOWS:
        shutil.move(workflows / workflow, live / workflow)
    workflows.rmdir()


def retest_main_on_push(project: Path) -> None:
    """With no deploy target, no staging run tests main after a merge: pr.yml
    does, on every push to main (with one, staging.yml calls pr.yml)."""
    pr = project / ".github/workflows/pr.yml"
    text = pr.read_text()
    if PUSH_TO_MAIN not in text:  # `cookiecutter -f` over a project
        pr.write_text(text.replace("on:\n", "on:\n" + PUSH_TO_MAIN, 1))


def use_lock_files_for(project: Path, accelerator: str) -> None:
    """requirements*.txt compiled for this accelerator (GPU adds torchao)."""
    locks = project / "requirements"
    for suffix in ("", "-dev"):
        shutil.move(
            locks / f"{accelerator}{suffix}.txt",
            project / f"requirements{suffix}.txt",
        )
    shutil.rmtree(locks)


def write_answers(project: Path, answers: dict) -> None:
    """Replay file: regenerate or update the project with the same answers."""
    kept = {
        key: value
        for key, value in answers.items()
        if not key.startswith("_") or key == "_template"
    }
    text = json.dumps({"cookiecutter": kept}, indent=2, sort_keys=True)
    (project / ANSWERS_FILE).write_text(text + "\n")


def init_git(project: Path) -> None:
    """A repository on `main`, the branch the workflows run on (git's own
    default may still be master), everything staged. Inside another
    repository's work tree (a monorepo), none: the files belong to it."""
    outer = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        cwd=project.parent,
        capture_output=True,
        text=True,
    )
    if outer.returncode == 0:
        print(f"Not running git init: {outer.stdout.strip()} holds it.")
        return
    if not (project / ".git").exists():  # regenerated over one: keep it
        subprocess.run(["git", "init", "--quiet"], cwd=project, check=True)
        # `git init --initial-branch` needs git 2.28; this, any git.
        subprocess.run(
            ["git", "symbolic-ref", "HEAD", "refs/heads/main"],
            cwd=project,
            check=True,
        )
    subprocess.run(["git", "add", "--all"], cwd=project, check=True)


def main() -> None:
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    project = Path.cwd()
    keep_cloud_target(project, answers["cloud"])
    if answers["cloud"] == "none":
        retest_main_on_push(project)
    use_lock_files_for(project, answers["accelerator"])
    write_answers(project, answers)
    if answers["init_git"]:
        init_git(project)


if __name__ == "__main__":
    main()
