"""Gunicorn settings for `make production` and the container.

`make production` runs: gunicorn -c python:<package>.gunicorn_conf ...
Uvicorn workers (async, one event loop each); one worker per core on CPU,
one per GPU on GPU (see Settings.web_concurrency).
"""

{% if cookiecutter.accelerator == "gpu" -%}
import itertools
{% endif -%}
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
keepalive = settings.keepalive_s  # the uvicorn workers' keep-alive
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
{%- if cookiecutter.accelerator == "gpu" %}


def visible_gpus() -> list[str]:
    """The GPUs this server may use, as CUDA_VISIBLE_DEVICES names them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch  # counts through NVML: CUDA stays uninitialised

    return [str(index) for index in range(torch.cuda.device_count())]


def pre_fork(server, worker):
    """The lowest GPU slot no live worker holds: a replaced worker gets the
    GPU of the one it replaces."""
    taken = {getattr(w, "gpu_slot", None) for w in server.WORKERS.values()}
    worker.gpu_slot = next(i for i in itertools.count() if i not in taken)


def post_fork(server, worker):
    """One GPU per worker: "cuda" would put every worker on the first GPU.
    Set before torch initialises CUDA in the worker, which reads it then."""
    gpus = visible_gpus()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[worker.gpu_slot % len(gpus)]
{%- endif %}
