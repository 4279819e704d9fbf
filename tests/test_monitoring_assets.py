"""The monitoring files every baked project ships: Prometheus scrape config
and alert rules that promtool accepts, and a Grafana dashboard that parses.
(That the dashboard and alerts ask only for metrics the service exports is
checked in the generated project's tests/test_metrics.py, against a live
app's /metrics.)"""

import shutil
import subprocess

import pytest

from .conftest import DEFAULTS, SUPPORTED, Project

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian/Ubuntu: apt install prometheus)",
)
ALERTS = {"HighErrorRate", "HighP99Latency", "DriftDetected"}


@pytest.fixture(scope="module")
def baked(cookies_session):
    """One bake per combination, shared by the tests of this module."""
    projects = {}

    def bake(**answers) -> Project:
        key = tuple(sorted(answers.items()))
        if key not in projects:
            result = cookies_session.bake(extra_context=answers)
            assert result.exception is None, result.exception
            projects[key] = Project(
                result.project_path, {**DEFAULTS, **answers}
            )
        return projects[key]

    return bake


def promtool(project, *args: str) -> str:
    result = subprocess.run(
        [PROMTOOL, "check", *args],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("answers", SUPPORTED)
def test_promtool_accepts_the_rules_and_the_scrape_config(baked, answers):
    project = baked(**answers)
    rules = promtool(project, "rules", "deploy/prometheus/alerts.yml")
    assert "SUCCESS" in rules
    config = promtool(project, "config", "deploy/prometheus/prometheus.yml")
    assert "1 rule files found" in config


@pytest.mark.parametrize("answers", SUPPORTED)
def test_alerts_and_scrape_job_are_named_for_the_project(baked, answers):
    project = baked(**answers)
    slug = project.path.name
    (config,) = project.yaml("deploy/prometheus/prometheus.yml")
    assert [job["job_name"] for job in config["scrape_configs"]] == [slug]
    (alerts,) = project.yaml("deploy/prometheus/alerts.yml")
    rules = {r["alert"]: r for g in alerts["groups"] for r in g["rules"]}
    assert ALERTS <= set(rules)
    for rule in rules.values():
        assert f'job="{slug}"' in rule["expr"]
        assert "{{ $" in rule["annotations"]["description"]  # not rendered


@pytest.mark.parametrize("answers", SUPPORTED)
def test_grafana_dashboard_is_valid_json_for_the_project(baked, answers):
    project = baked(**answers)
    dashboard = project.json("deploy/grafana/dashboard.json")
    assert dashboard["title"] == "Iris Classifier"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert all('job="$job"' in expr for expr in exprs)
    legends = [t.get("legendFormat", "") for p in panels for t in p["targets"]]
    assert "{{route}} {{status}}" in legends  # Grafana's, not Jinja's
    (job,) = [v for v in dashboard["templating"]["list"] if v["name"] == "job"]
    assert job["current"]["value"] == project.path.name
