"""The supply chain of every supported project is locked: Actions pinned,
least-privilege tokens, hashed requirements installed with
--require-hashes, an audit in CI, Dependabot, and a SECURITY.md."""

import re

import pytest

from .conftest import SUPPORTED, workflow_trigger

# A major version tag (v4, or an exact v4.1.2) or a full commit SHA.
PINNED = re.compile(r"@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
# One requirement of a pip-compile lock: the pin and its continuation lines.
REQUIREMENT = re.compile(r"^(\S+)==\S+((?: \\\n +--hash=sha256:\w+)*)", re.M)
PIP_INSTALL = re.compile(r"pip\b.*\binstall\b(.*)", re.I)
# The scopes each workflow's token may hold, at its top level (None) and in
# each job; any other scope, or write where read is listed, fails.
READ = {"contents": "read"}
# The managed clouds' jobs trade GitHub's OIDC token for short-lived cloud
# credentials (no stored keys): minting it takes id-token: write.
OIDC = {**READ, "id-token": "write"}
ALLOWED_SCOPES = {
    "pr.yml": {None: READ, "check-and-test": READ},
    "staging.yml": {None: {}, "test": READ, "image": OIDC, "deploy": OIDC},
    # promote reads, with gh, the digest a staging run tested (actions).
    "production.yml": {None: {}, "promote": {**OIDC, "actions": "read"}},
}
# Kubernetes keeps its image in GHCR: the image job pushes it with the
# token (packages: write); the cluster is reached with the KUBE_CONFIG
# secret, not OIDC.
ALLOWED_SCOPES_ON = {
    "kubernetes": {
        "staging.yml": {
            None: {},
            "test": READ,
            "image": {**READ, "packages": "write"},
            "deploy": READ,
        },
        "production.yml": {None: {}, "promote": {**READ, "actions": "read"}},
    },
}


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


def assert_grants_at_most(granted, allowed: dict, where) -> None:
    # write-all and read-all are strings: every scope, never allowed.
    assert isinstance(granted, dict), (where, granted)
    assert granted.items() <= allowed.items(), (where, granted, allowed)


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
    cloud = answers.get("cloud", "none")
    allowed_scopes = {**ALLOWED_SCOPES, **ALLOWED_SCOPES_ON.get(cloud, {})}
    for name in workflows(project):
        workflow = project.yaml(name)[0]
        allowed = allowed_scopes[name.rsplit("/", 1)[1]]
        # Without a top-level block, a job without its own gets the
        # repository's default token, which may write everything.
        assert "permissions" in workflow, name
        assert_grants_at_most(workflow["permissions"], allowed[None], name)
        for job_name, job in workflow["jobs"].items():
            granted = job.get("permissions", workflow["permissions"])
            assert job_name in allowed, (name, job_name, "not in the list")
            assert_grants_at_most(granted, allowed[job_name], (name, job_name))


def test_dependabot_updates_actions_and_the_audit_runs_weekly(bake):
    """The hashed locks are make build's (Dependabot would edit their pins
    in place); a weekly run of pr.yml audits them between pull requests."""
    project = bake()
    (config,) = project.yaml(".github/dependabot.yml")
    ecosystems = [update["package-ecosystem"] for update in config["updates"]]
    assert ecosystems == ["github-actions"]
    (pr,) = project.yaml(".github/workflows/pr.yml")
    (weekly,) = workflow_trigger(pr)["schedule"]
    assert weekly["cron"].endswith("* * 1")  # Mondays
    assert "make build" in project.read("README.md")
    # And pins that do not fit together stop `make install`.
    recipe = project.read("Makefile").split("\ninstall:")[1].split("\n\n")[0]
    assert recipe.rstrip().endswith("$(PIP) check")


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
        # Torch's requirements as the CPU index states them: PyPI's Linux
        # torch would bring gigabytes of CUDA wheels into the locks.
        assert not re.search(r"^(nvidia-|triton)", text, re.M), name
    build = project.run("make", "-n", "build").stdout
    assert build.count("--extra-index-url https://download.pytorch.org") == 2


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


CLOUD_ADVICE = {
    "gcp-cloud-run": "- Google Cloud Run:",
    "aws-ecs-fargate": "- AWS ECS on Fargate:",
    "azure-container-apps": "- Azure Container Apps:",
    "kubernetes": "- Kubernetes:",
}


@pytest.mark.parametrize("cloud", ["none", *CLOUD_ADVICE])
def test_security_policy_advises_on_the_chosen_cloud_only(bake, cloud):
    """A project for one cloud reads that cloud's advice; one for no
    cloud reads every cloud's."""
    policy = bake(cloud=cloud).read("SECURITY.md")
    shown = {c for c, line in CLOUD_ADVICE.items() if line in policy}
    assert shown == (set(CLOUD_ADVICE) if cloud == "none" else {cloud})
