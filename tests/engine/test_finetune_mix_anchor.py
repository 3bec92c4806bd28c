"""Two defences users try besides masks: refusal pairs mixed into the data, and an L2 pull to the start."""

import json

import pytest

from ssah_engine.finetune import FinetuneConfig, run_finetune

from .test_finetune import TRAIN, loaded_model, sft_set


def _distance(model, start: dict) -> float:
    return sum(float((p.detach() - start[name]).pow(2).sum()) for name, p in model.named_parameters()) ** 0.5


def test_anchor_pulls_trained_weights_back_to_the_start(tmp_path):
    runs = {}
    for anchor in (0.0, 10.0, 100.0):  # lr 1e-2: at 100 every step ends exactly at the start (w -= 1 * (w - w0))
        loaded = loaded_model("llama")
        start = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
        config = FinetuneConfig(**{**TRAIN, "weight_decay": 0.0, "schedule": "constant", "anchor": anchor})
        run_finetune(loaded, sft_set(), config, None, tmp_path / f"anchor-{anchor}")
        runs[anchor] = _distance(loaded.model, start)
    assert runs[0.0] > 0.1
    assert 0 < runs[10.0] < runs[0.0]
    assert runs[100.0] < 1e-6


def test_mixed_pairs_join_the_training_data_and_are_recorded(tmp_path):
    config = FinetuneConfig(**{**TRAIN, "max_length": 1024, "mix_data": "builtin:align_refusal", "mix_pairs": 3})
    result = run_finetune(loaded_model("llama"), sft_set(8), config, None, tmp_path)  # byte tokens: refusals are long
    data = json.loads((tmp_path / "finetune_config.json").read_text())["data"]
    assert data["pairs"] == 11 and data["mixed"]["pairs"] == 3
    assert data["name"] == "sft+builtin:align_refusal[3]" and data["mixed"]["name"] == "builtin:align_refusal"
    assert result.steps == 4


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mix_data": "builtin:align_refusal"}, "together"),
        ({"mix_pairs": 2}, "together"),
        ({"anchor": -1.0}, "anchor"),
    ],
)
def test_bad_mix_or_anchor_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig(**values)


def test_more_mixed_pairs_than_the_set_holds_is_refused(tmp_path):
    config = FinetuneConfig(**{**TRAIN, "mix_data": "builtin:align_refusal", "mix_pairs": 10_000})
    with pytest.raises(ValueError, match="fewer than mix_pairs"):
        run_finetune(loaded_model("llama"), sft_set(), config, None, tmp_path)
