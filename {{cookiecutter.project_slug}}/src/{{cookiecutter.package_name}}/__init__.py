"""A PyTorch classifier served with FastAPI (see README.md)."""

__version__ = {{ cookiecutter.version | tojson }}
PROJECT_NAME = {{ cookiecutter.project_name | tojson }}  # noqa: E501
DESCRIPTION = {{ cookiecutter.description | tojson }}  # noqa: E501
