"""GPU paths run where a CUDA device is present; the CPU fallback is tested
everywhere (tests/test_pipeline.py)."""

{% if cookiecutter.accelerator == "gpu" -%}
import copy
import os
from types import SimpleNamespace

{% endif -%}
import pytest
import torch
{% if cookiecutter.accelerator == "gpu" %}
from {{ cookiecutter.package_name }} import gunicorn_conf
from {{ cookiecutter.package_name }}.predict import Predictor, quantize_for
{%- else %}
from {{ cookiecutter.package_name }}.predict import Predictor
{%- endif %}

from .conftest import make_settings
from .test_quantize import MIN_AGREEMENT, labels, share

{% if cookiecutter.accelerator == "gpu" -%}
CUDA = torch.device("cuda")
{% endif -%}
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("autocast_bf16", [False, True])
def test_cuda_predictions_match_the_cpu(artifacts, dataset, autocast_bf16):
    _, _, x, _ = dataset
    rows = [tuple(map(float, r)) for r in x]
    fp32 = dict(quantize_int8=False)  # int8 has its own test, below
    cpu = Predictor.load(make_settings(artifacts, device="cpu", **fp32))
    gpu = Predictor.load(
        make_settings(
            artifacts, device="cuda", autocast_bf16=autocast_bf16, **fp32
        )
    )
    assert gpu.info()["device"].startswith("cuda") and "gpu" in gpu.info()
    assert gpu.autocast is autocast_bf16
    on_cpu, on_gpu = cpu.predict_rows(rows), gpu.predict_rows(rows)
    agreement = sum(
        a["label"] == b["label"] for a, b in zip(on_cpu, on_gpu)
    ) / len(rows)
    assert agreement >= 0.97  # bf16 may flip a borderline row
    if not autocast_bf16:  # fp32 on both: only the last bits differ
        assert all(
            abs(a["confidence"] - b["confidence"]) < 1e-5
            for a, b in zip(on_cpu, on_gpu)
        )


@pytest.mark.gpu
@needs_cuda
def test_int8_on_cuda_uses_torchao(artifacts, dataset):
    pytest.importorskip("torchao")
    _, _, x, _ = dataset
    rows = [tuple(map(float, r)) for r in x]
    gpu = Predictor.load(
        make_settings(artifacts, device="cuda", quantize_int8=True)
    )
    assert gpu.info()["quantized"]
    assert torchao_int8_weights(gpu.model)
    cpu = Predictor.load(
        make_settings(artifacts, device="cpu", quantize_int8=False)
    )
    assert share(zip(labels(gpu, rows), labels(cpu, rows))) >= MIN_AGREEMENT


def torchao_int8_weights(model: torch.nn.Module) -> bool:
    """Whether every Linear layer holds torchao's quantized weights."""
    from torchao.utils import TorchAOBaseTensor

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return bool(linears) and all(
        isinstance(m.weight, TorchAOBaseTensor) for m in linears
    )
{%- if cookiecutter.accelerator == "gpu" %}


def test_the_cuda_int8_scheme_is_torchao_weight_only(artifacts, dataset):
    """quantize_for's CUDA branch, run on the CPU (torchao's int8
    weight-only tensors work there too): every Linear of the trained model
    gets int8 weights, and its labels stay those of fp32."""
    _, _, x, _ = dataset
    rows = [tuple(map(float, r)) for r in x]
    fp32 = Predictor.load(
        make_settings(artifacts, device="cpu", quantize_int8=False)
    )
    model = quantize_for(copy.deepcopy(fp32.model), CUDA)
    assert torchao_int8_weights(model)
    int8 = Predictor(
        model, fp32.features, fp32.classes, fp32.device, fp32.version, True
    )
    assert share(zip(labels(int8, rows), labels(fp32, rows))) >= MIN_AGREEMENT


class FakeArbiter:
    """What gunicorn's pre_fork and post_fork hooks see of the master."""

    def __init__(self):
        self.WORKERS = {}

    def spawn(self, pid: int, monkeypatch, visible: str | None):
        worker = SimpleNamespace(pid=pid)
        gunicorn_conf.pre_fork(self, worker)
        self.WORKERS[pid] = worker
        # post_fork runs in the child, which starts with the master's env.
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        gunicorn_conf.post_fork(self, worker)
        return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_each_worker_gets_its_own_gpu(monkeypatch):
    master = FakeArbiter()
    seen = [master.spawn(pid, monkeypatch, "3,5") for pid in (11, 12, 13)]
    assert seen == ["3", "5", "3"]  # more workers than GPUs: round robin
    del master.WORKERS[12]  # the worker on GPU 5 dies; its successor...
    assert master.spawn(14, monkeypatch, "3,5") == "5"  # ...takes GPU 5


def test_gpus_are_counted_when_none_are_listed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    master = FakeArbiter()
    seen = [master.spawn(pid, monkeypatch, None) for pid in (11, 12)]
    assert seen == ["0", "1"]


def test_no_gpu_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert FakeArbiter().spawn(11, monkeypatch, None) is None
{%- endif %}
