import json
import sys

import pytest
import torch

from ssah_engine.loading import ModelLoadError, load_model
from ssah_engine.testing import tiny_model

IDS = torch.tensor([[5, 17, 99, 42, 8, 230, 11, 3]])


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture
def adapter_dir(tmp_path):
    """A LoRA adapter on builtin:tiny-llama with non-zero B (a fresh adapter is the identity)."""
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_model("llama")
    dense = _logits(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    expected = _logits(peft_model.eval())
    peft_model.save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "builtin:tiny-llama"
    config_path.write_text(json.dumps(config))
    return tmp_path / "adapter", dense, expected


def test_an_adapter_directory_loads_as_its_base_with_the_adapter_merged(adapter_dir):
    path, dense, expected = adapter_dir
    loaded = load_model(str(path))
    assert not any("lora" in name for name, _ in loaded.model.named_parameters())  # merged, plain modules
    got = _logits(loaded.model)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, dense, atol=1e-3)
    assert loaded.tokenizer.pad_token is not None and "adapter" in loaded.resolved


def test_an_adapter_without_peft_names_the_extra(adapter_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ModelLoadError, match=r"ssah-audit\[peft\]"):
        load_model(str(adapter_dir[0]))


def test_resolving_an_adapter_to_weight_files_refuses_with_a_reason(adapter_dir):
    from ssah_engine.loading import LoadOptions, resolve_source

    with pytest.raises(ModelLoadError, match="PEFT adapter"):
        resolve_source(str(adapter_dir[0]), LoadOptions())
