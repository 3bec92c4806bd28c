"""`ssah probe` and `ssah eval --direction` on tiny models."""

import argparse
import json

import pytest
import torch

from ssah.cli import main
from ssah.commands.common import CommandError
from ssah.commands.direction_flags import direction_intervention
from ssah_engine.testing import tiny_model
from tests.engine.conftest import write_jsonl


@pytest.fixture
def probe_dir(tmp_path):
    harmful = write_jsonl(
        tmp_path / "h.jsonl",
        [{"prompt": f"how to do bad thing {i}", "response": f"Sorry, I can't help with thing {i}."} for i in range(8)],
    )
    harmless = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": f"how to bake cake {i}"} for i in range(8)])
    out = tmp_path / "probe"
    assert (
        main(
            [
                "probe",
                "--model",
                "builtin:tiny-llama",
                "--compare",
                "builtin:tiny-qwen2",
                "--harmful",
                harmful,
                "--harmless",
                harmless,
                "--ks",
                "2,4",
                "--queries",
                "3",
                "--calibration",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_probe_writes_both_models_and_their_difference(probe_dir, capsys):
    combined = json.loads((probe_dir / "probe.json").read_text())
    assert set(combined) == {"model", "compare", "difference"}
    model, other = combined["model"], combined["compare"]
    assert model["queries"] == 3 and set(model["distances"]["refusal"]) == {"2", "4"}
    layer_diff = combined["difference"]["refusal"]["2"]
    expected = [a - b for a, b in zip(model["distances"]["refusal"]["2"], other["distances"]["refusal"]["2"])]
    assert layer_diff == pytest.approx(expected, abs=1e-5)
    assert (probe_dir / "model" / "direction.safetensors").exists()
    assert (probe_dir / "compare" / "direction.safetensors").exists()


def test_eval_direction_flags_change_the_model_only_inside(probe_dir):
    model, tokenizer = tiny_model("llama")
    ids = torch.tensor([tokenizer("hello there friend", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        for flags in (dict(ablate_direction=True, add_direction=None), dict(ablate_direction=False, add_direction=8.0)):
            args = argparse.Namespace(direction=probe_dir / "model", **flags)
            with direction_intervention(model, args) as described:
                changed = model(input_ids=ids).logits
            assert described["kind"] == ("ablate" if flags["ablate_direction"] else "add")
            assert not torch.allclose(changed, plain, atol=1e-4)
            torch.testing.assert_close(model(input_ids=ids).logits, plain, atol=0, rtol=0)
    for bad in (
        dict(direction=None, ablate_direction=True, add_direction=None),
        dict(direction=probe_dir / "model", ablate_direction=True, add_direction=1.0),
        dict(direction=probe_dir / "model", ablate_direction=False, add_direction=None),
    ):
        with pytest.raises(CommandError), direction_intervention(model, argparse.Namespace(**bad)):
            pass


def test_eval_records_the_intervention(probe_dir, tmp_path):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                "builtin:tiny-llama",
                "--samples",
                "2",
                "--max-new-tokens",
                "2",
                "--zero-shot-tasks",
                "",
                "--direction",
                str(probe_dir / "model"),
                "--ablate-direction",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "evaluation.json").read_text())
    assert result["direction_intervention"]["kind"] == "ablate"
    assert (
        main(["eval", "--model", "builtin:tiny-llama", "--samples", "2", "--add-direction", "1", "--out", str(out)])
        == 2
    )
