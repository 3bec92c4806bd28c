"""The CUDA path: bf16 models, device-side statistics, masks and ablation on the GPU.

Marked ``gpu``: CI machines have no GPU; `scripts/gpu_check.sh` runs these on a lent one.
"""

import pytest
import torch

from ssah_engine.ablation import ablate
from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.finetune import FinetuneConfig, run_finetune
from ssah_engine.loading import LoadedModel, LoadOptions, load_model, pick_device_and_dtype
from ssah_engine.testing import tiny_model

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda_llama():
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA device (run them with -m gpu on a GPU machine only)")
    return load_model("builtin:tiny-llama")


def test_cuda_defaults_to_bf16():
    device, dtype = pick_device_and_dtype(LoadOptions())
    assert (device.type, dtype) == ("cuda", torch.bfloat16)


def test_audit_on_cuda_matches_cpu(cuda_llama, safety_set, utility_set):
    config = AuditConfig(samples=12, batch_size=4)
    model, tokenizer = tiny_model("llama")
    cpu = run_audit(LoadedModel(model, tokenizer, "cpu", "cpu"), safety_set, utility_set, config)
    gpu32 = LoadedModel(model.to("cuda"), tokenizer, "cuda", "cuda")
    on_gpu = run_audit(gpu32, safety_set, utility_set, config)
    torch.testing.assert_close(on_gpu.z_safety, cpu.z_safety, rtol=1e-3, atol=1e-3)
    bf16 = run_audit(cuda_llama, safety_set, utility_set, config)
    assert bf16.model["dtype"] == "bfloat16"
    assert torch.corrcoef(torch.stack([bf16.z_utility, cpu.z_utility]))[0, 1] > 0.9


def test_ablation_restores_bf16_weights_on_cuda(cuda_llama, safety_set, utility_set):
    unit_map = run_audit(cuda_llama, safety_set, utility_set, AuditConfig(samples=12))
    before = {name: tensor.clone() for name, tensor in cuda_llama.model.state_dict().items()}
    ids = torch.tensor([[5, 6, 7, 8]], device="cuda")
    with torch.no_grad(), ablate(cuda_llama.model, unit_map, unit_map.mask(["SCU", "RU"])):
        cuda_llama.model(ids)
    assert all(torch.equal(tensor, before[name]) for name, tensor in cuda_llama.model.state_dict().items())


def test_masked_finetune_on_cuda_keeps_frozen_slices(cuda_llama, safety_set, utility_set, tmp_path):
    unit_map = run_audit(cuda_llama, safety_set, utility_set, AuditConfig(samples=12))
    before = {name: tensor.clone() for name, tensor in cuda_llama.model.state_dict().items()}
    config = FinetuneConfig(
        mode="freeze",
        freeze_classes=("SCU", "CU"),
        max_steps=3,
        lr=1e-3,
        weight_decay=0.1,
        batch_size=4,
        bf16=True,
        gradient_checkpointing=True,
    )
    result = run_finetune(cuda_llama, utility_set, config, unit_map, tmp_path)
    assert result.steps == 3
    layer = 0
    q = cuda_llama.model.model.layers[layer].self_attn.q_proj.weight
    heads = unit_map.space.split(unit_map.mask(["SCU", "CU"]))[0][layer]
    for head in heads.nonzero().flatten().tolist():
        rows = slice(head * 8, head * 8 + 8)
        assert torch.equal(q[rows], before[f"model.layers.{layer}.self_attn.q_proj.weight"][rows])
    changed = [not torch.equal(t, before[n]) for n, t in cuda_llama.model.state_dict().items()]
    assert any(changed)
