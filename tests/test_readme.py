"""The README's two commands are the ones CI and the tests use."""

import re

from .conftest import TEMPLATE

README = (TEMPLATE / "README.md").read_text()
GENERATE, TEST = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)[:2]


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
