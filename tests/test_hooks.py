"""Bad answers are refused before anything is written; the hook functions
have unit tests of their own."""

import pytest
import yaml
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

from hooks import post_gen_project, pre_gen_project

from .conftest import TEMPLATE, UNSUPPORTED

BAD_ANSWERS = [
    pytest.param(
        {"project_slug": "Bad Slug"}, "project_slug", id="slug-space"
    ),
    pytest.param({"project_slug": "1model"}, "project_slug", id="slug-digit"),
    pytest.param({"project_slug": "a--b"}, "project_slug", id="slug-dashes"),
    pytest.param({"project_slug": "a" * 37}, "too long", id="slug-long"),
    pytest.param({"package_name": "a" * 37}, "too long", id="pkg-long"),
    pytest.param({"project_name": "!!!"}, "project_slug", id="name-no-slug"),
    pytest.param({"package_name": "torch"}, "shadow", id="pkg-torch"),
    pytest.param({"package_name": "fastapi"}, "shadow", id="pkg-fastapi"),
    pytest.param({"package_name": "test"}, "shadow", id="pkg-test"),
    pytest.param({"package_name": "json"}, "shadow", id="pkg-stdlib"),
    pytest.param({"package_name": "pip"}, "shadow", id="pkg-pip"),
    pytest.param({"package_name": "yaml"}, "shadow", id="pkg-pyyaml"),
    pytest.param({"project_name": "Packaging"}, "shadow", id="name-dep"),
    pytest.param(
        {"cloud": "gcp-cloud-run", "project_slug": "a" * 23},
        "at most 22",
        id="slug-long-for-gcp",
    ),
    pytest.param(
        {"cloud": "azure-container-apps", "project_slug": "a" * 25},
        "at most 24",
        id="slug-long-for-azure",
    ),
    pytest.param(
        {"cloud": "azure-container-apps", "project_slug": "ir-is"},
        "registry name 'iris'",
        id="slug-short-for-azure",
    ),
    pytest.param({"package_name": "class"}, "keyword", id="pkg-keyword"),
    pytest.param({"package_name": "my-pkg"}, "identifier", id="pkg-dash"),
    pytest.param({"package_name": "Pkg"}, "identifier", id="pkg-upper"),
    pytest.param({"version": "one"}, "PEP 440", id="version"),
    pytest.param({"version": "1.0 beta"}, "PEP 440", id="version-space"),
    pytest.param({"author_email": "nobody"}, "email", id="email"),
    pytest.param({"description": "two\nlines"}, "one line", id="multiline"),
    pytest.param(
        {"project_name": "  "}, "project_name is empty", id="name-blank"
    ),
    pytest.param(
        {"author_name": "a" * 201}, "at most 200 characters", id="text-long"
    ),
]


def assert_refused(tmp_path, capfd, answers, expected_words):
    with pytest.raises(FailedHookException):
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context=answers,
            output_dir=str(tmp_path),
        )
    err = capfd.readouterr().err
    assert expected_words in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    return err


@pytest.mark.parametrize("answers, words", BAD_ANSWERS)
def test_bad_answers_are_refused_with_one_sentence(
    tmp_path, capfd, answers, words
):
    assert_refused(tmp_path, capfd, answers, words)


@pytest.mark.parametrize("answers, words", UNSUPPORTED)
def test_unsupported_combinations_name_the_alternative(
    tmp_path, capfd, answers, words
):
    assert_refused(tmp_path, capfd, answers, words)


def test_a_slug_too_long_for_its_target_is_given_one_limit(tmp_path, capfd):
    answers = {
        "cloud": "gcp-cloud-run",
        "project_slug": "a" * 40,
        "package_name": "iris_classifier",
    }
    err = assert_refused(tmp_path, capfd, answers, "at most 22")
    assert "at most 36" not in err
    assert err.count("ERROR:") == 1


def test_an_unknown_choice_is_refused_before_generation(cookies):
    result = cookies.bake(extra_context={"cloud": "heroku"})
    assert result.exception is not None and result.project_path is None


@pytest.mark.parametrize(
    "name", ["iris_classifier", "model2", "sunflower_sorter", "api_service"]
)
def test_good_package_names_pass(name):
    assert pre_gen_project.check_package_name(name) is None


@pytest.mark.parametrize(
    "version", ["0.1.0", "1.0", "2.0.0rc1", "1.0.post2", "3.1.dev4"]
)
def test_pep440_versions_pass(version):
    assert pre_gen_project.check_version(version) is None


def test_python_versions_outside_the_tested_ones_are_refused():
    assert "3.11" in pre_gen_project.check_python("3.9")
    assert pre_gen_project.check_python("3.11") is None


def test_gpu_is_refused_only_where_the_target_has_none():
    check = pre_gen_project.check_accelerator_on_cloud
    assert check("gpu", "aws-ecs-fargate")
    for cloud in (
        "none",
        "gcp-cloud-run",
        "azure-container-apps",
        "kubernetes",
    ):
        assert check("gpu", cloud) is None
        assert check("cpu", cloud) is None


def test_keep_cloud_target_removes_the_others(tmp_path):
    for target in post_gen_project.CLOUD_TARGETS:
        (tmp_path / "deploy" / target / "workflows").mkdir(parents=True)
        for workflow in post_gen_project.DEPLOY_WORKFLOWS:
            (tmp_path / "deploy" / target / "workflows" / workflow).touch()
    (tmp_path / ".github/workflows").mkdir(parents=True)
    post_gen_project.keep_cloud_target(tmp_path, "kubernetes")
    assert [p.name for p in (tmp_path / "deploy").iterdir()] == ["kubernetes"]
    assert sorted(
        p.name for p in (tmp_path / ".github/workflows").iterdir()
    ) == [
        "production.yml",
        "staging.yml",
    ]


def test_regenerating_without_a_target_drops_the_old_ones_workflows(
    tmp_path,
):
    """`cookiecutter -f` over a gcp-cloud-run project, with cloud=none."""
    (tmp_path / "deploy/gcp-cloud-run").mkdir(parents=True)
    (tmp_path / ".github/workflows").mkdir(parents=True)
    for workflow in (*post_gen_project.DEPLOY_WORKFLOWS, "pr.yml"):
        (tmp_path / ".github/workflows" / workflow).touch()
    post_gen_project.keep_cloud_target(tmp_path, "none")
    assert not (tmp_path / "deploy/gcp-cloud-run").exists()
    workflows = [p.name for p in (tmp_path / ".github/workflows").iterdir()]
    assert workflows == ["pr.yml"]


def test_without_a_target_pr_yml_tests_main_on_push(tmp_path):
    workflows = tmp_path / ".github/workflows"
    workflows.mkdir(parents=True)
    pr = workflows / "pr.yml"
    pr.write_text("name: pr\n\non:\n  pull_request:\n\njobs: {}\n")
    for _ in range(2):  # generated, then regenerated over itself (-f)
        post_gen_project.retest_main_on_push(tmp_path)
        trigger = yaml.safe_load(pr.read_text())[True]
        assert trigger == {
            "push": {"branches": ["main"]},
            "pull_request": None,
        }


@pytest.mark.parametrize(
    "slug, cloud",
    [
        ("a" * 22, "gcp-cloud-run"),
        ("a" * 24, "azure-container-apps"),
        ("irisx", "azure-container-apps"),
        ("a" * 36, "aws-ecs-fargate"),
        ("a" * 36, "kubernetes"),
    ],
)
def test_slugs_that_fit_the_cloud_pass(slug, cloud):
    assert pre_gen_project.check_slug_on_cloud(slug, cloud) is None


def test_git_init_without_git_is_refused(monkeypatch):
    monkeypatch.setattr(pre_gen_project.shutil, "which", lambda name: None)
    assert "git is not installed" in pre_gen_project.check_git(True)
    assert pre_gen_project.check_git(False) is None
