"""Gunicorn settings for `make production` and the container.

`make production` runs: gunicorn -c python:<package>.gunicorn_conf ...
Uvicorn workers (async, one event loop each); one worker per core on CPU,
one per GPU on GPU (see Settings.web_concurrency).
"""

import logging
import os
import shutil
import tempfile

from .settings import get_settings

settings = get_settings()

bind = f"{settings.host}:{settings.port}"
workers = settings.web_concurrency
worker_class = "uvicorn_worker.UvicornWorker"
loglevel = settings.log_level
# SIGTERM: stop accepting, let requests in flight (and those waiting in a
# micro-batch) finish, then exit 0. Cloud runtimes wait 10-30 s before they
# kill; tests/test_server.py checks all of this on a real server.
graceful_timeout = 20
timeout = 60
keepalive = 5
# The control socket (gunicornc) is one fixed path per user: two servers on
# one machine would fight over it, and a container has no use for it.
control_socket_disable = True


class OneLineModelLoadError(logging.Filter):
    """A model that cannot be loaded is the operator's problem, not a bug:
    log the one sentence that names the file, not the traceback."""

    marker = "ModelLoadError: "

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.marker in message:
            reason = message.rsplit(self.marker, 1)[1].strip()
            record.msg, record.args = f"Cannot start: {reason}", ()
        return True


# Uvicorn reports a failed start-up (the lifespan) on this logger; the
# workers are forked from this process and keep the filter.
logging.getLogger("uvicorn.error").addFilter(OneLineModelLoadError())


def on_starting(server):
    """A fresh Prometheus multiprocess folder per start: no stale counts."""
    folder = tempfile.mkdtemp(prefix="prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    server.prometheus_folder = folder


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    shutil.rmtree(getattr(server, "prometheus_folder", ""), True)
