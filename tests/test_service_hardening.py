"""Deep layer: the default project's production server survives bad input
(schemathesis fuzzes every operation of its own OpenAPI schema) and load
(`make soak`: a minute at concurrency 64, no failures, flat memory)."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest

from .conftest import free_port, make, stop_process_group, wait_ready

pytestmark = pytest.mark.slow

# The checks that concern a service without auth or state: no 5xx, only
# documented statuses, content types and bodies, invalid input refused and
# valid input accepted.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
)
MAX_EXAMPLES = 200  # per operation; the bodyless ones need only one
SOAK_SECONDS = 60


@contextmanager
def production_server(project, deep_env):
    """`make production` on a free loopback port, one worker; stopped (and
    its exit code checked) on the way out."""
    port = free_port()
    server = subprocess.Popen(
        ["make", "production", f"PYTHON={deep_env['PYTHON']}"],
        cwd=project.path,
        env={
            **os.environ,
            **deep_env,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server)
        yield url
    finally:
        stop_process_group(server)


def test_fuzzing_finds_no_server_error_and_no_schema_mismatch(
    bake, deep_env, tmp_path, record_property
):
    project = bake()
    make(project, "train", deep_env)
    report = tmp_path / "schemathesis.json"
    with production_server(project, deep_env) as url:
        result = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "run",
                f"{url}/openapi.json",
                "--checks", ",".join(CHECKS),
                "--max-examples", str(MAX_EXAMPLES),
                "--request-timeout", "10",
                "--seed", "6",
                "--generation-database", "none",
                "--no-color",
                "--report", "json",
                "--report-json-path", str(report),
            ],
            cwd=tmp_path,  # its caches stay out of the template
            capture_output=True,
            text=True,
            timeout=300,  # no --max-time: it repeats fuzzing until spent
        )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    run = json.loads(report.read_text())
    examples = run["test_cases"]["generated"]
    record_property("schemathesis_examples", examples)
    print(f"schemathesis: {examples} examples, no failures")
    assert run["operations"]["tested"] == run["operations"]["total"] >= 6
    assert run["failures"] == [] and run["errors"] == []
    assert examples >= 300


@pytest.mark.load
def test_soak_has_no_failures_and_flat_memory(bake, deep_env, record_property):
    project = bake()
    make(project, "train", deep_env)
    project.run(
        "make",
        "soak",
        f"PYTHON={deep_env['PYTHON']}",
        env={**deep_env, "SOAK_DURATION_S": str(SOAK_SECONDS)},
        timeout=SOAK_SECONDS + 240,
    )
    soak = project.json("reports/soak.json")
    for name in ("requests", "requests_per_s", "failures"):
        record_property(f"soak_{name}", soak[name])
    for moment, mib in soak["rss_mib"].items():
        record_property(f"soak_rss_{moment}_mib", mib)
    print(f"soak: {json.dumps(soak)}")
    assert soak["failures"] == 0
    assert soak["requests"] >= 10_000
    assert soak["rss_growth_last_third"] < 0.05
    assert soak["server_exit_code"] == 0
