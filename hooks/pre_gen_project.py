"""Reject bad answers before cookiecutter writes a single file.

Each check returns one sentence that says what to choose instead, or None.
Cookiecutter removes the project directory when this hook exits non-zero.
"""

import json
import keyword
import re
import shutil
import sys
import unicodedata

# The project's own layout: a package of the same name would collide.
LAYOUT_NAMES = {"api", "src", "test", "tests"}
# The top-level modules of everything the lock files (CPU and GPU) and a
# virtualenv install: the Makefile puts src/ first on the import path, so a
# package of one of these names would hide it (`pip` would break `make
# install`). tests/test_deep.py checks this list against a fresh install.
INSTALLED_NAMES = {
    "annotated_doc", "annotated_types", "anyio", "black", "blackd",
    "blib2to3", "boolean", "build", "cachecontrol", "certifi",
    "charset_normalizer", "click", "contourpy", "cycler", "cyclonedx",
    "dateutil", "defusedxml", "dotenv", "fastapi", "filelock", "flake8",
    "fsspec", "functorch", "gunicorn", "h11", "httpcore2", "httptools",
    "httpx", "httpx2", "hypothesis", "idna", "iniconfig", "isort",
    "isympy", "jinja2", "kiwisolver", "license_expression", "markdown_it",
    "markupsafe", "matplotlib", "mccabe", "mdurl", "mpl_toolkits",
    "mpmath", "msgpack", "mypy_extensions", "networkx", "numpy",
    "opentelemetry", "orjson", "packageurl", "packaging",
    "packaging_legacy_version", "pathspec", "pip", "pip_api", "pip_audit",
    "pip_requirements_parser", "piptools", "platformdirs", "pluggy",
    "prometheus_client", "py", "py_serializable", "pycodestyle",
    "pydantic", "pydantic_core", "pydantic_settings", "pyflakes",
    "pygments", "pylab", "pyparsing", "pyproject_hooks", "pytest",
    "pytest_timeout", "pytokens", "redis", "requests", "rich", "scipy",
    "setuptools", "sortedcontainers", "starlette", "sympy", "tomli",
    "tomli_w", "torch", "torchao", "torchgen", "tqdm", "truststore",
    "typing_extensions", "typing_inspection", "tzdata", "urllib3",
    "uvicorn", "uvicorn_worker", "uvloop", "watchfiles", "websockets",
    "wheel", "yaml",
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
# Cloud targets that cannot schedule a GPU.
NO_GPU_TARGETS = {"aws-ecs-fargate"}
# The longest slug a target's derived names allow, and the name that sets it.
LONGEST_SLUG_ON = {
    "gcp-cloud-run": (22, "its runtime service account '<slug>-runtime'", 30),
    "azure-container-apps": (24, "its staging app '<slug>-staging'", 32),
}
# Azure Container Registry names: the slug without dashes, 5 to 50 letters
# and digits.
SHORTEST_REGISTRY = 5


def check_project_name(name: str):
    if not name.strip():
        return "project_name is empty: give the project a name."
    return check_text("project_name", name)


def check_slug(slug: str, cloud: str):
    if slug == EMPTY_SLUG:
        return (
            "project_name has no letters or digits to make project_slug "
            "from: use some in the name, or set project_slug."
        )
    # A target with a tighter limit names its own (check_slug_on_cloud):
    # two different maxima for one slug would only confuse.
    longest_on_cloud = LONGEST_SLUG_ON.get(cloud, (MAX_NAME,))[0]
    if len(slug) > MAX_NAME and longest_on_cloud >= MAX_NAME:
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
    if name in LAYOUT_NAMES | INSTALLED_NAMES | sys.stdlib_module_names:
        return (
            f"package_name {name!r} would shadow the module of the same "
            "name that the project imports or installs: choose another "
            f"(for example '{name}_service')."
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
            f"{cloud} cannot run GPUs: choose accelerator=cpu, or a target "
            "that can: gcp-cloud-run, azure-container-apps or kubernetes "
            "(or none, to deploy the image yourself)."
        )
    return None


def check_slug_on_cloud(slug: str, cloud: str):
    if cloud in LONGEST_SLUG_ON:
        longest, name, limit = LONGEST_SLUG_ON[cloud]
        if len(slug) > longest:
            return (
                f"project_slug {slug!r} is too long for {cloud}: {name} may "
                f"have at most {limit} characters, so use at most {longest}."
            )
    if cloud == "azure-container-apps":
        registry = slug.replace("-", "")
        if len(registry) < SHORTEST_REGISTRY:
            return (
                f"project_slug {slug!r} is too short for "
                f"azure-container-apps: its registry name {registry!r} "
                f"needs at least {SHORTEST_REGISTRY} letters and digits."
            )
    return None


def check_git(init_git: bool):
    if init_git and shutil.which("git") is None:
        return (
            "init_git is true but git is not installed: install git, or "
            "answer init_git=false."
        )
    return None


def problems(answers: dict) -> list[str]:
    found = [
        check_project_name(answers["project_name"]),
        check_slug(answers["project_slug"], answers["cloud"]),
        check_package_name(answers["package_name"]),
        check_version(answers["version"]),
        check_email(answers["author_email"]),
        check_text("description", answers["description"]),
        check_text("author_name", answers["author_name"]),
        *(check_characters(field, answers[field]) for field in TEXT_FIELDS),
        check_python(answers["python_version"]),
        check_accelerator_on_cloud(answers["accelerator"], answers["cloud"]),
        check_slug_on_cloud(answers["project_slug"], answers["cloud"]),
        check_git(answers["init_git"]),
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
