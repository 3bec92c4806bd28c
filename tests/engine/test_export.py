import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from ssah.cli import main
from ssah_engine.ablation import ablate
from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.export import ExportError, export_ablated
from ssah_engine.loading import LoadedModel
from ssah_engine.model_card import CARD_FILE
from ssah_engine.testing import tiny_model

IDS = torch.tensor([[5, 17, 99, 42, 8, 230, 11, 3]])


def _audited(family, safety_set, utility_set):
    model, tokenizer = tiny_model(family)
    loaded = LoadedModel(model, tokenizer, f"builtin:tiny-{family}", f"builtin:tiny-{family}")
    return loaded, run_audit(loaded, safety_set, utility_set, AuditConfig(samples=12))


def _units(unit_map):
    units = torch.zeros(unit_map.space.size, dtype=torch.bool)
    units[[0, 1, 3, 6]] = True  # a whole KV group of layer 0, and single heads
    units[unit_map.space.total_heads + torch.tensor([2, 7, 50, 60])] = True  # neurons in both layers
    return units


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def front_matter(path):
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("compensation", ["none", "safety"])
def test_exported_model_gives_the_in_memory_ablation_logits(family, compensation, safety_set, utility_set, tmp_path):
    loaded, unit_map = _audited(family, safety_set, utility_set)
    units = _units(unit_map)
    dense = _logits(loaded.model)
    with ablate(loaded.model, unit_map, units, compensation=compensation):
        expected = _logits(loaded.model)
    with ablate(loaded.model, unit_map, units, compensation="none"):
        zeroed = _logits(loaded.model)

    export_ablated(loaded, unit_map, units, tmp_path / "out", compensation=compensation)
    exported, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    got = _logits(exported.eval())

    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, dense, atol=1e-3)  # the units are really gone
    if compensation == "safety":
        assert not torch.allclose(got, zeroed, atol=1e-3)  # and their mean contribution is in the biases
        layer = exported.model.layers[0]
        assert layer.self_attn.o_proj.bias.abs().sum() > 0 and layer.mlp.down_proj.bias.abs().sum() > 0
    card = front_matter(tmp_path / "out" / CARD_FILE)
    assert card["library_name"] == "transformers" and "ssah-audit" in card["tags"]
    body = (tmp_path / "out" / CARD_FILE).read_text()
    assert f"builtin:tiny-{family}" in body and "## Unit map" in body and f'"compensation": "{compensation}"' in body


def test_export_refuses_a_compensation_it_cannot_bake(safety_set, utility_set, tmp_path):
    loaded, unit_map = _audited("qwen3", safety_set, utility_set)  # q/k norms: no Llama equivalent, no mlp bias
    before = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}
    with pytest.raises(ExportError, match="compensation none"):
        export_ablated(loaded, unit_map, _units(unit_map), tmp_path / "out", compensation="safety")
    assert all(torch.equal(before[name], tensor) for name, tensor in loaded.model.state_dict().items())
    assert not (tmp_path / "out").exists()


def test_cli_export_writes_a_loadable_checkpoint(safety_set, utility_set, tmp_path, capsys):
    loaded, unit_map = _audited("llama", safety_set, utility_set)
    unit_map.save(tmp_path / "units")
    code = main(
        [
            "export",
            "--model",
            "builtin:tiny-llama",
            "--device",
            "cpu",
            "--units",
            str(tmp_path / "units"),
            "--ablate",
            "random:RU",
            "--seed",
            "3",
            "--compensation",
            "safety",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    units = unit_map.mask("RU")
    from ssah_engine.controls import matched_random

    removed = matched_random(unit_map, ["RU"], 3)
    assert removed.sum() == units.sum() and removed.any()
    with ablate(loaded.model, unit_map, removed, compensation="safety"):
        expected = _logits(loaded.model)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert torch.allclose(_logits(exported), expected, atol=1e-5)
    body = (tmp_path / "out" / CARD_FILE).read_text()
    assert json.dumps("random matched to RU (seed 3)") in body


def test_finetuned_model_carries_a_card_with_masks_data_and_results(tmp_path):
    from ssah_engine.finetune import FinetuneConfig, run_finetune

    from .conftest import make_dataset

    model, tokenizer = tiny_model("llama")
    loaded = LoadedModel(model, tokenizer, "builtin:tiny-llama", "builtin:tiny-llama")
    data = make_dataset("sft", [(f"say {i}", f"{i} said.") for i in range(8)])
    config = FinetuneConfig(mode="full", max_steps=2, batch_size=4, max_length=64, evaluate=True)
    result = run_finetune(loaded, data, config, None, tmp_path, evaluate_fn=lambda lm: {"score": 0.25})
    path = result.model_dir / CARD_FILE
    card = front_matter(path)
    assert card["tags"] == ["ssah-audit", "finetuned"] and card["library_name"] == "transformers"
    assert "base_model" not in card  # a builtin is no hub id
    body = path.read_text()
    assert data.sha256 in body and '"trainable_fraction"' in body and '"after": {' in body
    assert '"score": 0.25' in body
