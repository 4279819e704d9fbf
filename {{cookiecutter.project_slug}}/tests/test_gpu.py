"""GPU paths run where a CUDA device is present; the CPU fallback is tested
everywhere (tests/test_pipeline.py)."""

import pytest
import torch

from {{ cookiecutter.package_name }}.predict import Predictor

from .conftest import make_settings

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)


@pytest.mark.gpu
@needs_cuda
def test_cuda_predictions_match_the_cpu(artifacts, dataset):
    _, _, x, _ = dataset
    rows = [tuple(map(float, r)) for r in x]
    cpu = Predictor.load(make_settings(artifacts, device="cpu"))
    gpu = Predictor.load(make_settings(artifacts, device="cuda"))
    assert gpu.info()["device"].startswith("cuda") and "gpu" in gpu.info()
    on_cpu, on_gpu = cpu.predict_rows(rows), gpu.predict_rows(rows)
    agreement = sum(
        a["label"] == b["label"] for a, b in zip(on_cpu, on_gpu)
    ) / len(rows)
    assert agreement >= 0.97  # bf16 autocast may flip a borderline row


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
    assert len(gpu.predict_rows(rows)) == len(rows)
