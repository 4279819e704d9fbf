"""Generation survives any answer: spaces, unicode, quotes, backslashes,
leading digits, very long strings, shell metacharacters. Each answer either
bakes a project that passes the fast checks or is refused by pre_gen with an
"ERROR:" sentence, with nothing written; never another exception."""

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cookiecutter.exceptions import CookiecutterException, FailedHookException
from cookiecutter.main import cookiecutter
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from hooks import pre_gen_project

from .conftest import CLOUDS, TEMPLATE, Project

# Shell, quoting and Markdown/YAML/TOML metacharacters, with some letters.
NASTY = list("\"'\\$`;|&<>()[]*?!#~%=:,@^ \t") + list("aZé9 ")


def without_jinja(text: str) -> str:
    """Cookiecutter renders answers given as extra_context (or --no-input
    defaults) as Jinja templates before any hook runs: no `{{`, `{%`, `{#`
    here; test_jinja_in_an_answer_... covers them."""
    return text.replace("{", "(")


def texts(max_size=40):
    return st.one_of(
        st.text(st.sampled_from(NASTY), max_size=max_size),
        st.text(max_size=max_size),  # any code point but surrogates
        st.text(st.sampled_from("ab c"), min_size=150, max_size=260),
    ).map(without_jinja)


names = st.one_of(
    texts(),
    st.builds(str.__add__, st.sampled_from("0123456789"), texts(20)),
    st.sampled_from(["My Model", "Ünïcødé Módel", "中文模型", "x" * 37]),
)
emails = st.one_of(
    st.emails(),
    st.builds("{}@{}".format, texts(20), texts(20)),
    texts(20),
)
versions = st.one_of(
    st.sampled_from(["0.1.0", "1.0", "2.0.0rc1", "1.0.post2", "v1!2.3+x.4"]),
    st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,4}){0,3}((a|b|rc)[0-9])?\Z"),
    texts(12),
)
strategies = {
    "project_name": names,
    "description": texts(),
    "author_name": texts(),
    "author_email": emails,
    "version": versions,
}
VALID = {
    "project_name": "Iris Classifier",
    "description": "A classifier.",
    "author_name": "Ada",
    "author_email": "ada@example.org",
    "version": "0.1.0",
}


@st.composite
def answers(draw) -> dict:
    """One or two fields drawn (a refusal of one would hide the others),
    the rest valid; any deploy target, since its files carry the names."""
    fields = draw(
        st.sets(st.sampled_from(sorted(strategies)), min_size=1, max_size=2)
    )
    drawn = {field: draw(strategies[field]) for field in sorted(fields)}
    return {**VALID, **drawn, "cloud": draw(st.sampled_from(CLOUDS))}


def module_constants(path: Path) -> dict:
    """The string constants a module assigns, as Python reads them."""
    tree = ast.parse(path.read_text())
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
    }


def assert_passes_fast_checks(project: Project, answers: dict) -> None:
    package = project.path.name.replace("-", "_")
    assert package.isidentifier() and package.isascii()
    source = project.path / "src" / package
    meta = project.toml("pyproject.toml")["project"]
    assert meta["name"] == project.path.name
    assert meta["description"] == answers["description"]
    assert meta["authors"] == [
        {"name": answers["author_name"], "email": answers["author_email"]}
    ]
    constants = module_constants(source / "__init__.py")
    assert constants["PROJECT_NAME"] == answers["project_name"]
    assert constants["DESCRIPTION"] == answers["description"]
    assert constants["__version__"] == answers["version"]
    assert answers["project_name"] in project.read("README.md")
    for name in project.files():
        if name.endswith((".yml", ".yaml")):
            assert project.yaml(name), name
        elif name.endswith(".json"):
            project.json(name)
        elif name.endswith(".py"):
            compile(project.read(name), name, "exec")
    project.run(sys.executable, "-m", "flake8", "src")


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # the same examples in every CI run
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(answers=answers())
@example(
    answers={
        "project_name": "Smile 😀",
        "description": "Emoji 😀",
        "author_name": "A",
        "author_email": "a@example.com",
        "version": "0.1.0",
        "cloud": "none",
    }
)
def test_any_answer_bakes_a_valid_project_or_is_refused(capfd, answers):
    with tempfile.TemporaryDirectory() as out:
        capfd.readouterr()
        try:
            path = cookiecutter(
                str(TEMPLATE),
                no_input=True,
                extra_context=answers,
                output_dir=out,
            )
        except FailedHookException:
            event("refused by pre_gen")
            assert "ERROR: " in capfd.readouterr().err
            assert list(Path(out).iterdir()) == []  # nothing half-written
            return
        event("baked")
        assert_passes_fast_checks(Project(path, answers), answers)


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param(
            {
                "project_name": 'He said "hi" \\ $(rm -rf /); `ls` | & > <',
                "description": "quote \" backslash \\ 'single' $HOME `x` ${x}",
                "author_name": 'O\'Brien "Bob" \\n',
                "author_email": 'a"b\\c@example.com',
                "version": "1.0+local.7",
                "cloud": "kubernetes",
            },
            id="shell-and-quotes",
        ),
        pytest.param(
            {
                "project_name": "Ünïcødé Módel",
                "description": "中文模型 « ok »",
                "author_name": "Zoë",
                "author_email": "zoë@exämple.org",
                "version": "2.0.0rc1",
                "cloud": "gcp-cloud-run",
            },
            id="unicode",
        ),
    ],
)
def test_nasty_but_valid_answers_bake_a_valid_project(bake, answers):
    # The property passes on any refusal: these must bake, so a pre_gen
    # that refused everything fails here.
    assert_passes_fast_checks(bake(**answers), answers)


@pytest.mark.parametrize(
    "text, words",
    [
        pytest.param("Smile \U0001f600", "U+1F600", id="emoji"),
        pytest.param("unassigned \u0378", "U+0378", id="unassigned"),
        pytest.param("line\u2028separator", "one line", id="line-separator"),
        pytest.param("next\x85line", "one line", id="nel"),
        pytest.param("delete\x7f", "one line", id="del"),
    ],
)
def test_characters_the_files_cannot_hold_are_named(text, words):
    problems = pre_gen_project.problems(
        {
            **VALID,
            "project_slug": "smile",
            "package_name": "smile",
            "python_version": "3.11",
            "accelerator": "cpu",
            "cloud": "none",
            "init_git": False,
            "description": text,
        }
    )
    assert len(problems) == 1 and words in problems[0]
    assert problems[0].startswith("description ")


@pytest.mark.parametrize("field", ["project_name", "description"])
def test_jinja_in_an_answer_fails_before_anything_is_written(tmp_path, field):
    """Cookiecutter's own behaviour with --no-input and extra_context: the
    answer is rendered as a template and an unknown name stops it."""
    with pytest.raises(CookiecutterException):
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={field: "${{ github.token }}"},
            output_dir=str(tmp_path),
        )
    assert list(tmp_path.iterdir()) == []


def test_answers_reach_the_project_byte_for_byte_through_the_cli(tmp_path):
    """The same, through the command line a user types (arguments, not a
    shell string: nothing is interpreted)."""
    description = "Quotes \" ' and `$(whoami)` && | ; \\"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "-o",
            str(tmp_path),
            str(TEMPLATE),
            f"description={description}",
        ],
        check=True,
        capture_output=True,
    )
    (project,) = tmp_path.iterdir()
    meta = Project(project, {}).toml("pyproject.toml")["project"]
    assert meta["description"] == description
