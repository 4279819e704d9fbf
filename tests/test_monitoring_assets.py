"""The monitoring files every baked project ships: Prometheus scrape config
and alert rules that promtool accepts, and a Grafana dashboard that parses.
(That the dashboard and alerts ask only for metrics the service exports is
checked in the generated project's tests/test_metrics.py, against a live
app's /metrics.)"""

import json
import shutil
import subprocess
from pathlib import Path

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


def error_alert_test(rules: Path, job: str) -> dict:
    """A promtool unit test: 10% of /predict fail, drowned in probes (and
    /ready's 503s while a model loads); HighErrorRate fires on the 10%."""
    per_minute = {
        ("/predict", "500"): 10,
        ("/predict", "200"): 90,
        ("/health", "200"): 1000,
        ("/ready", "503"): 1000,
    }
    series = [
        {
            "series": f'http_requests_total{{job="{job}",route="{route}",'
            f'status="{status}"}}',
            "values": f"0+{count}x30",
        }
        for (route, status), count in per_minute.items()
    ]
    description = "10% of the requests got a 5xx over the last 5 minutes."
    expected = {
        "exp_labels": {"severity": "page"},
        "exp_annotations": {
            "summary": f"{job}: more than 5% of requests fail",
            "description": description,
        },
    }
    return {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "HighErrorRate",
                        "exp_alerts": [expected],
                    }
                ],
            }
        ],
    }


@needs_promtool
def test_the_error_alert_counts_prediction_requests_only(baked, tmp_path):
    project = baked()
    rules = project.path / "deploy/prometheus/alerts.yml"
    test = tmp_path / "errors_test.yml"  # JSON is YAML
    test.write_text(json.dumps(error_alert_test(rules, project.path.name)))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(test)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
