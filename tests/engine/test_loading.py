import pytest
import torch

from ssah_engine.loading import LoadOptions, ModelLoadError, load_model
from ssah_engine.testing import tiny_model


def test_tiny_builtin_loads_in_eval_mode():
    loaded = load_model("builtin:tiny-qwen2", LoadOptions(device="cpu"))
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM"
    assert not loaded.model.training
    assert loaded.device.type == "cpu" and next(loaded.model.parameters()).dtype == torch.float32


def test_local_directory_round_trip(tmp_path):
    model, tokenizer = tiny_model("mistral", seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), LoadOptions(device="cpu", local_files_only=True))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.tokenizer.chat_template == tokenizer.chat_template


@pytest.mark.parametrize(
    "source, message",
    [
        ("builtin:nope", "unknown builtin model 'builtin:nope'"),
        ("/no/such/dir", "has no config.json"),
        ("./missing.gguf", "GGUF file './missing.gguf' does not exist"),
        ("builtin:tiny-gpt2", "no tiny model for 'gpt2'"),
    ],
)
def test_bad_sources_give_clear_errors(source, message):
    with pytest.raises((ModelLoadError, ValueError), match=message):
        load_model(source)


def test_unknown_hub_id_fails_clearly_offline():
    with pytest.raises(ModelLoadError, match="could not load model 'nobody/nothing-here'"):
        load_model("nobody/nothing-here", LoadOptions(local_files_only=True))


def test_bad_dtype():
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model("builtin:tiny-llama", LoadOptions(dtype="float7"))


@pytest.mark.slow
def test_smollm2_is_converted_once_then_cached(tmp_path, monkeypatch):
    import transformers

    first = load_model("builtin:smollm2", LoadOptions(cache_dir=tmp_path))
    assert type(first.model).__name__ == "LlamaForCausalLM"
    assert first.model.config.num_hidden_layers == 30
    assert (tmp_path / "gguf").is_dir() and str(tmp_path) in first.resolved

    real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained

    def refuse_gguf(*args, **kwargs):
        assert "gguf_file" not in kwargs, "the GGUF file was converted a second time"
        return real_from_pretrained(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse_gguf)
    second = load_model("builtin:smollm2", LoadOptions(cache_dir=tmp_path))
    assert second.resolved == first.resolved
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_tiny_tokenizer_is_the_same_in_every_process():
    import subprocess
    import sys

    code = "from ssah_engine.testing import tiny_tokenizer; print(tiny_tokenizer()('hello')['input_ids'])"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(runs) == 1
