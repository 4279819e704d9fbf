"""The README's two commands are the ones CI and the tests use, and the
first, run as written, gives a project that passes its tests and serves."""

import os
import re
import subprocess

import pytest

from .conftest import (
    TEMPLATE,
    free_port,
    http,
    stop_process_group,
    wait_ready,
)

README = (TEMPLATE / "README.md").read_text()
GENERATE, TEST = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)[:2]
SETOSA = {
    "sepal_length": 5.1,
    "sepal_width": 3.5,
    "petal_length": 1.4,
    "petal_width": 0.2,
}
# pip installs, training, the project's own tests, then the start.
SECONDS_TO_SERVE = 900


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = (TEMPLATE / ".ci/run").read_text().splitlines()
    commands = [line for line in ci_lines if line and line[0] not in "# "]
    assert TEST.strip() == "make test"
    assert commands[-1] == TEST.strip()


def test_the_generate_command_uses_the_tested_cookiecutter():
    pinned = re.search(
        r"^cookiecutter==(\S+)$",
        (TEMPLATE / "requirements-test.txt").read_text(),
        re.MULTILINE,
    )
    assert f"pip install cookiecutter=={pinned[1]} " in GENERATE
    assert "cookiecutter --no-input" in GENERATE


@pytest.mark.slow
def test_the_generate_command_makes_a_project_that_passes_and_serves(tmp_path):
    """The README's first command as a user pastes it, in a folder of its
    own with its own pip, the template's path for `gh:org/boring-ml`."""
    outer = tmp_path / "outer"
    subprocess.run(["python3.11", "-m", "venv", outer], check=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHON", "PYTHONPATH")
    }
    port = free_port()
    env |= {
        "PATH": f"{outer / 'bin'}{os.pathsep}{env['PATH']}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    command = GENERATE.strip().replace("gh:org/boring-ml", str(TEMPLATE))
    log_path = tmp_path / "readme.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=tmp_path, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        status, _ = wait_ready(url, process, SECONDS_TO_SERVE, log_path)
        assert status == 200
        status, answer = http("POST", f"{url}/predict", SETOSA)
        assert status == 200 and answer["label"] == "setosa"
    finally:
        stop_process_group(process)
