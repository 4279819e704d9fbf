"""The supply chain of every supported project is locked: Actions pinned,
least-privilege tokens, hashed requirements installed with
--require-hashes, an audit in CI, Dependabot, and a SECURITY.md."""

import re

import pytest

from .conftest import SUPPORTED

# A major version tag (v4, or an exact v4.1.2) or a full commit SHA.
PINNED = re.compile(r"@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
# One requirement of a pip-compile lock: the pin and its continuation lines.
REQUIREMENT = re.compile(r"^(\S+)==\S+((?: \\\n +--hash=sha256:\w+)*)", re.M)
PIP_INSTALL = re.compile(r"pip\b.*\binstall\b(.*)", re.I)


def workflows(project) -> list[str]:
    return sorted(
        name
        for name in project.files()
        if name.startswith(".github/workflows/")
    )


def steps_and_jobs(workflow: dict):
    """Every place a workflow can say `uses:`: jobs and their steps."""
    for job in workflow["jobs"].values():
        yield job
        yield from job.get("steps", [])


@pytest.mark.parametrize("answers", SUPPORTED)
def test_every_action_is_pinned(bake, answers):
    project = bake(**answers)
    actions = [
        step["uses"]
        for name in workflows(project)
        for step in steps_and_jobs(project.yaml(name)[0])
        if "uses" in step and not step["uses"].startswith("./")
    ]
    assert actions  # at least checkout
    assert [uses for uses in actions if not PINNED.search(uses)] == []


@pytest.mark.parametrize("answers", SUPPORTED)
def test_every_workflow_limits_its_token(bake, answers):
    project = bake(**answers)
    for name in workflows(project):
        workflow = project.yaml(name)[0]
        if "permissions" in workflow:
            continue
        for job_name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{name}: job {job_name}"


def test_dependabot_updates_pip_and_actions(bake):
    project = bake()
    (config,) = project.yaml(".github/dependabot.yml")
    ecosystems = {update["package-ecosystem"] for update in config["updates"]}
    assert {"pip", "github-actions"} <= ecosystems
    (pip,) = [u for u in config["updates"] if u["package-ecosystem"] == "pip"]
    # Its pin lives in three files Dependabot does not all know about.
    assert {"dependency-name": "torch"} in pip["ignore"]


@pytest.mark.parametrize("answers", SUPPORTED)
def test_lock_files_hash_every_pinned_package(bake, answers):
    project = bake(**answers)
    for name in ("requirements.txt", "requirements-dev.txt"):
        text = project.read(name)
        pins = REQUIREMENT.findall(text)
        assert len(pins) > 20, name
        unhashed = [package for package, hashes in pins if not hashes]
        assert unhashed == [], name
        assert "\ntorch==" not in text  # from the PyTorch index, see Makefile


@pytest.mark.parametrize("answers", SUPPORTED)
def test_installs_require_hashes_except_the_pinned_torch(bake, answers):
    project = bake(**answers)
    for name in ("Makefile", "Dockerfile"):
        lines = project.read(name).replace("\\\n", " ")
        installs = PIP_INSTALL.findall(lines)
        assert installs, name
        for arguments in installs:
            if "-r " in arguments:
                assert "--require-hashes" in arguments, (name, arguments)
            else:
                assert re.search(r"\btorch==\$[({]TORCH_VERSION", arguments)


def test_audit_runs_in_the_pull_request_workflow(bake):
    project = bake()
    assert re.search(
        r"^audit:.*\n\t.*pip_audit.*--require-hashes",
        project.read("Makefile"),
        re.M,
    )
    (pr,) = project.yaml(".github/workflows/pr.yml")
    commands = [
        step.get("run", "")
        for job in pr["jobs"].values()
        for step in job["steps"]
    ]
    assert "make audit" in commands


def test_security_policy_says_how_to_expose_the_service(bake):
    project = bake(author_email="security@example.org")
    policy = " ".join(project.read("SECURITY.md").split())
    for words in (
        "CORS is off by default",
        "behind the cloud's auth and ingress",
        "no authentication of its own",
        "weights_only=True",
        "MAX_BODY_BYTES",
        "MAX_BATCH_ITEMS",
        "REQUEST_TIMEOUT_S",
        "security@example.org",
    ):
        assert words in policy, words
