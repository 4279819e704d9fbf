"""Reject bad answers before cookiecutter writes a single file.

Each check returns one sentence that says what to choose instead, or None.
Cookiecutter removes the project directory when this hook exits non-zero.
"""

import json
import keyword
import re
import sys
import unicodedata

# What the generated project imports: a package of the same name would
# shadow it (and `test`/`tests`/`src` collide with the project's layout).
TAKEN_NAMES = {
    "api", "black", "fastapi", "flake8", "gunicorn", "httpx", "httpx2",
    "hypothesis", "isort", "matplotlib", "numpy", "orjson",
    "prometheus_client", "pydantic", "pydantic_settings", "pytest",
    "redis", "scipy", "src", "starlette", "test", "tests", "torch",
    "torchao", "tqdm", "uvicorn", "uvicorn_worker",
}  # fmt: skip

# PEP 440, from packaging.version.VERSION_PATTERN (no dependency here).
PEP440 = re.compile(
    r"^v?(?:(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*"
    r"(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?"
    r"(?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?"
    r"(?:[-_.]?dev[-_.]?[0-9]*)?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?)$",
    re.IGNORECASE,
)
SLUG = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# The generated code is formatted for 79 columns; its longest import line
# leaves 36 characters for the package name (and so for the slug).
MAX_NAME, MAX_TEXT = 36, 200
# Control characters and line/paragraph separators: YAML and Python read
# them as line breaks (or refuse them) where an answer is written verbatim.
LINE_BREAKING = {"Cc", "Zl", "Zp"}
TEXT_FIELDS = ("project_name", "description", "author_name", "author_email")
# cookiecutter.json's slug when the name has nothing to make one from.
EMPTY_SLUG = "name-without-letters"
SUPPORTED_PYTHON = {"3.11"}
# Cloud targets that cannot schedule a GPU, with what to pick instead.
NO_GPU_TARGETS = {"aws-ecs-fargate"}


def check_project_name(name: str):
    if not name.strip():
        return "project_name is empty: give the project a name."
    return check_text("project_name", name)


def check_slug(slug: str):
    if slug == EMPTY_SLUG:
        return (
            "project_name has no letters or digits to make project_slug "
            "from: use some in the name, or set project_slug."
        )
    if len(slug) > MAX_NAME:
        return (
            f"project_slug {slug[:20]!r}... is too long: use at most "
            f"{MAX_NAME} characters."
        )
    if not SLUG.match(slug):
        return (
            f"project_slug {slug!r} must be lowercase letters, digits and "
            "single dashes, starting with a letter (for example "
            "'iris-classifier'): pick another project_name or set "
            "project_slug."
        )
    return None


def check_package_name(name: str):
    if not (name.isidentifier() and name.isascii() and name == name.lower()):
        return (
            f"package_name {name!r} is not a lowercase Python identifier: "
            "use letters, digits and underscores (for example "
            "'iris_classifier')."
        )
    if len(name) > MAX_NAME:
        return (
            f"package_name {name[:20]!r}... is too long: use at most "
            f"{MAX_NAME} characters."
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"package_name {name!r} is a Python keyword: choose another."
    if name in TAKEN_NAMES or name in sys.stdlib_module_names:
        return (
            f"package_name {name!r} would shadow the module of the same "
            "name that the project imports: choose another (for example "
            f"'{name}_service')."
        )
    return None


def check_version(version: str):
    if not PEP440.match(version):
        return (
            f"version {version!r} is not a PEP 440 version: use something "
            "like '0.1.0'."
        )
    return None


def check_email(email: str):
    if not EMAIL.match(email):
        return (
            f"author_email {email!r} is not an email address: use "
            "name@example.com."
        )
    return None


def check_text(field: str, value: str):
    if len(value) > MAX_TEXT or any(
        unicodedata.category(c) in LINE_BREAKING for c in value
    ):
        return (
            f"{field} must be one line of at most {MAX_TEXT} characters: "
            "shorten it, without line breaks or control characters."
        )
    return None


def check_characters(field: str, value: str):
    # Jinja's tojson writes U+10000 and above as surrogate pairs, which TOML
    # rejects and Python reads as two broken characters.
    for c in value:
        if ord(c) > 0xFFFF or unicodedata.category(c) in ("Cn", "Cs"):
            return (
                f"{field} contains {c!r} (U+{ord(c):04X}, an emoji or "
                "unassigned character) that pyproject.toml cannot hold: "
                "remove it."
            )
    return None


def check_python(version: str):
    if version not in SUPPORTED_PYTHON:
        return (
            f"python_version {version!r} is not supported: choose "
            f"{' or '.join(sorted(SUPPORTED_PYTHON))}."
        )
    return None


def check_accelerator_on_cloud(accelerator: str, cloud: str):
    if accelerator == "gpu" and cloud in NO_GPU_TARGETS:
        return (
            f"{cloud} cannot run GPUs: choose accelerator=cpu, or a GPU "
            "target: gcp-cloud-run, azure-container-apps, kubernetes or "
            "none."
        )
    return None


def problems(answers: dict) -> list[str]:
    found = [
        check_project_name(answers["project_name"]),
        check_slug(answers["project_slug"]),
        check_package_name(answers["package_name"]),
        check_version(answers["version"]),
        check_email(answers["author_email"]),
        check_text("description", answers["description"]),
        check_text("author_name", answers["author_name"]),
        *(check_characters(field, answers[field]) for field in TEXT_FIELDS),
        check_python(answers["python_version"]),
        check_accelerator_on_cloud(answers["accelerator"], answers["cloud"]),
    ]
    return [problem for problem in found if problem]


def main() -> int:
    # Rendered by cookiecutter; JSON inside a raw string survives any answer.
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    found = problems(answers)
    for problem in found:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
