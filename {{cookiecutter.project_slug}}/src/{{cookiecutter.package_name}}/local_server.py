"""The production server on loopback, started as `make production` starts
it: shared by `make bench`, `make soak` and the tests of a real server."""

import os
import socket
import sys
from pathlib import Path

PACKAGE = __package__
HOST = "127.0.0.1"
APP = f"{PACKAGE}.api.main:create_app()"
SRC = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def production_command(app: str = APP) -> list[str]:
    """Gunicorn with uvicorn workers and the project's gunicorn_conf."""
    config = f"python:{PACKAGE}.gunicorn_conf"
    return [sys.executable, "-m", "gunicorn", "-c", config, app]


def loopback_env(port: int, **env: str) -> dict[str, str]:
    """This environment, with src/ importable and the server on HOST:port
    (the package runs from src/, installed or not)."""
    path = os.pathsep.join(
        filter(None, [str(SRC), os.environ.get("PYTHONPATH")])
    )
    return {
        **os.environ,
        "PYTHONPATH": path,
        "HOST": HOST,
        "PORT": str(port),
        **env,
    }
