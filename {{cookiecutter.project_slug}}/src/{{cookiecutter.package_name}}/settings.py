"""All runtime settings, read once from the environment (or a .env file)."""

{% if cookiecutter.accelerator != "gpu" -%}
import os
{% endif -%}
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

{% if cookiecutter.accelerator != "gpu" -%}
# A cgroup v2 CPU limit: "<quota> <period>" (microseconds) or "max <period>".
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

{% endif %}
def default_workers() -> int:
{%- if cookiecutter.accelerator == "gpu" %}
    """One worker per GPU: each worker holds its own copy of the model."""
    import torch

    return max(1, torch.cuda.device_count())
{%- else %}
    """One worker per usable core, each with one torch thread.

    Usable: the CPU affinity and a cgroup v2 quota (a container limited to
    2 CPUs on a 64-core host gets 2 workers, not 64).
    """
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    try:
        quota, period = CPU_MAX.read_text().split()
        if quota != "max":
            cores = min(cores, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    return max(1, cores)
{%- endif %}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", protected_namespaces=()
    )

    # Where `make train` writes and the service reads its artifacts.
    artifacts_dir: Path = Path("artifacts")
    data_path: Path = Path("data/iris.csv")
    # Serve the int8 model written by `make quantize`.
    quantize_int8: bool = {{ "True" if cookiecutter.quantize_int8 else "False" }}
    # "cuda" falls back to the CPU, with one warning, where no GPU is found.
    device: Literal["auto", "cpu", "cuda"] = "{{ 'cuda' if cookiecutter.accelerator == 'gpu' else 'cpu' }}"
    # torch.compile on CUDA: pays for wide models and steady batch shapes;
    # on a tiny MLP its warm-up costs more than it saves. Measure first.
    torch_compile: bool = False
    # bf16 autocast on CUDA: pays for wide layers; this tiny MLP runs 1.5-1.8x
    # slower with it (the casts cost more kernel launches than they save).
    autocast_bf16: bool = False
    # One torch thread per worker: workers x threads must not exceed cores.
    torch_threads: int = Field(1, ge=1)

    port: int = Field(8000, ge=1, le=65535)
    host: str = "0.0.0.0"
    web_concurrency: int = Field(default_factory=default_workers, ge=1)
    log_level: str = "info"
    # Seconds an idle client connection stays open. Above the idle timeout
    # of the load balancer in front (AWS ALB, ingress-nginx: 60 s), or it
    # reuses a connection the server has just closed and answers a 502.
    keepalive_s: int = Field(75, ge=1)

    # Hot path.
    micro_batching: bool = True
    max_micro_batch: int = Field(256, ge=1)
    max_batch_items: int = Field(1024, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    request_timeout_s: float = Field(10.0, gt=0)

    # Prediction cache: in-process LRU, shared through Redis when set.
    cache_size: int = Field(10_000, ge=0)
    cache_url: str | None = None
    cache_ttl_s: int = Field(3600, ge=1)

    # Drift monitoring.
    drift_window: int = Field(1000, ge=10)
    drift_min_samples: int = Field(100, ge=5)
    drift_p_value: float = Field(0.05, gt=0, lt=1)
    drift_cache_s: float = Field(10.0, ge=0)
    # JSON-lines log of inputs and outputs for `make drift-report`.
    prediction_log: Path | None = None
    prediction_log_max_bytes: int = Field(10_000_000, ge=1024)

    @field_validator("prediction_log", mode="before")
    @classmethod
    def empty_means_off(cls, value):
        """`PREDICTION_LOG=` (empty) turns the log off, as unset does
        (`make production PREDICTION_LOG=`), instead of naming `.`."""
        return None if value == "" else value

    @property
    def fp32_model_path(self) -> Path:
        return self.artifacts_dir / "model.pt"

    @property
    def model_path(self) -> Path:
        """The file the service loads on the CPU."""
        if self.quantize_int8:
            return self.artifacts_dir / "model-int8.pt"
        return self.fp32_model_path


def make_again(path: Path, made_by: str = "make train") -> str:
    """The fix for a damaged artifact: make goes by dates, and the damaged
    file is newer than its sources, so it must go first."""
    return f"`rm -f {path} && {made_by}` makes it again."


@lru_cache
def get_settings() -> Settings:
    return Settings()
