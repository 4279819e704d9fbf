"""The production server on loopback, started as `make production` starts
it: shared by `make bench`, `make soak` and the tests of a real server."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

PACKAGE = __package__
HOST = "127.0.0.1"
APP = f"{PACKAGE}.api.main:create_app()"
SRC = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nothing listens on, held for the server about to
    bind it. Binding port 0 and closing only picks a port: the kernel can
    pick it again, for this process or another, before the server binds it
    (five servers started side by side shared one about once in 2,000 runs).
    So the port is left in TIME_WAIT (our end closes first, after one
    connection): for 60 s no bind to port 0 gets it, while a server that
    sets SO_REUSEADDR, as gunicorn, uvicorn and redis-server do, binds it
    at once."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.create_connection((HOST, port)):
            accepted, _ = listener.accept()
            accepted.close()
    return port


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


def start_production(app: str = APP, **popen) -> subprocess.Popen:
    """`production_command` in a process group of its own, so that
    `kill_group` reaches its workers too."""
    return subprocess.Popen(
        production_command(app), start_new_session=True, **popen
    )


def stop_production(process: subprocess.Popen, timeout_s: float) -> bool:
    """SIGTERM to the master, as a container runtime sends it; SIGKILL to
    the whole group if it overstays. Whether it stopped in time."""
    process.send_signal(signal.SIGTERM)  # nothing, if it has exited
    try:
        process.wait(timeout_s)
        return True
    except subprocess.TimeoutExpired:
        kill_group(process)
        return False


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a server started by `start_production` and all its workers.
    Killing only gunicorn's master would orphan the uvicorn workers, which
    do not notice and go on running."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # all gone already
        pass
    process.wait()
