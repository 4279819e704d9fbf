"""Gunicorn settings for `make production` and the container.

Run as: gunicorn -c python:{{ cookiecutter.package_name }}.gunicorn_conf ...
Uvicorn workers (async, one event loop each); one worker per core on CPU,
one per GPU on GPU (see Settings.web_concurrency).
"""

import os
import shutil
import tempfile

from {{ cookiecutter.package_name }}.settings import get_settings

settings = get_settings()

bind = f"{settings.host}:{settings.port}"
workers = settings.web_concurrency
worker_class = "uvicorn_worker.UvicornWorker"
loglevel = settings.log_level
# SIGTERM: stop accepting, let requests in flight (and those waiting in a
# micro-batch) finish, then exit. Cloud runtimes wait 10-30 s.
graceful_timeout = 20
timeout = 60
keepalive = 5


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
