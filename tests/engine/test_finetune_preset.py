"""The keep-refusals preset: after a tiny model learns to refuse, benign fine-tuning with the preset keeps its
tracked refusal margin above plain fine-tuning's at every tracked step."""

import copy

import pytest

from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.data import load_dataset
from ssah_engine.finetune import FinetuneConfig, run_finetune

from .test_finetune import loaded_model

TRACK = dict(max_length=512, warmup_ratio=0.0, log_every=100, track_refusal=True, track_prompts=4)


def test_the_preset_fills_only_what_is_left_at_its_default():
    config = FinetuneConfig.from_dict({"preset": "keep-refusals", "mix_pairs": 4})
    assert (config.mode, config.setting, config.mix_data, config.mix_pairs) == (
        "freeze",
        "ii",
        "builtin:align_refusal",
        4,
    )
    assert not (config.train_embeddings or config.train_norms or config.train_lm_head)
    with pytest.raises(ValueError, match="preset must be one of"):
        FinetuneConfig(preset="keep-everything")


@pytest.mark.slow
def test_keep_refusals_holds_the_tracked_margin_above_plain_finetuning(tmp_path):
    # A tiny model taught to refuse (the random one has nothing to keep), then audited like an aligned model.
    aligned = loaded_model("llama")
    teach = FinetuneConfig(lr=1e-2, batch_size=8, max_steps=30, track_every=30, **TRACK)
    taught = run_finetune(aligned, load_dataset("builtin:align_refusal", limit=48), teach, None, tmp_path / "align")
    assert taught.history[-1]["refusal_margin"] > taught.tracking["baseline"]["refusal_margin"] + 3
    unit_map = run_audit(
        aligned, load_dataset("builtin:safety"), load_dataset("builtin:utility"), AuditConfig(samples=8, max_length=512)
    )
    weights = copy.deepcopy(aligned.model.state_dict())
    benign = load_dataset("builtin:benign_sft", limit=16)
    common = dict(lr=1e-2, batch_size=4, max_steps=16, track_every=4, **TRACK)
    curves = {}
    for name, values, units in (("plain", common, None), ("kept", {**common, "preset": "keep-refusals"}, unit_map)):
        aligned.model.load_state_dict(weights)
        result = run_finetune(aligned, benign, FinetuneConfig.from_dict(values), units, tmp_path / name)
        curves[name] = [entry["refusal_margin"] for entry in result.history if "refusal_margin" in entry]
    assert len(curves["kept"]) == len(curves["plain"]) == 4
    assert all(kept > plain for kept, plain in zip(curves["kept"], curves["plain"]))
    assert curves["plain"][-1] < taught.history[-1]["refusal_margin"] - 1  # plain fine-tuning did erode it
