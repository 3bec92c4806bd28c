"""`ssah finetune` end to end on a tiny model: masks held, model saved, evaluation and re-audit written."""

import json

import torch
from transformers import AutoModelForCausalLM

from ssah.cli import main
from ssah_engine.evaluation import DataRef, Protocol
from ssah_engine.finetune import ParamMasks
from ssah_engine.testing import tiny_model
from tests.engine.conftest import write_jsonl


def test_finetune_freeze_with_evaluation_and_reaudit(tmp_path, capsys):
    safety = write_jsonl(
        tmp_path / "s.jsonl", [{"prompt": f"bad thing {i}", "response": f"Sorry, no {i}."} for i in range(8)]
    )
    utility = write_jsonl(
        tmp_path / "u.jsonl", [{"prompt": f"add {i} and 1", "response": f"It is {i + 1}."} for i in range(8)]
    )
    sft = tmp_path / "dolly.json"  # Alpaca/Dolly-style JSON
    sft.write_text(
        json.dumps(
            [{"instruction": f"Name colour {i}.", "input": "", "output": f"Colour {i} is blue."} for i in range(8)]
        )
    )
    protocol = Protocol(
        harmful=DataRef("builtin:harmful_eval", limit=2),
        harmless=DataRef("builtin:harmless_eval", limit=2),
        benign_text=DataRef("builtin:benign_text", limit=1),
        instructions=None,
        conditions=("no_system",),
        max_new_tokens=2,
        perplexity_max_length=32,
        perplexity_stride=16,
        zero_shot_tasks=(),
    ).save(tmp_path / "protocol.json")
    model = ["--model", "builtin:tiny-llama"]
    assert (
        main(
            [
                "audit",
                *model,
                "--safety-data",
                safety,
                "--utility-data",
                utility,
                "--samples",
                "8",
                "--cuts",
                "0.1,0.05,0.1",
                "--out",
                str(tmp_path / "map"),
            ]
        )
        == 0
    )
    capsys.readouterr()

    out = tmp_path / "run"
    code = main(
        [
            "finetune",
            *model,
            "--data",
            str(sft),
            "--mode",
            "freeze",
            "--units",
            str(tmp_path / "map"),
            "--setting",
            "i",
            "--max-steps",
            "3",
            "--lr",
            "1e-2",
            "--weight-decay",
            "0.1",
            "--evaluate",
            "--eval-protocol",
            str(protocol),
            "--reaudit",
            "--out",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert "loss: first" in stdout and "role transfer:" in stdout

    record = json.loads((out / "finetune_config.json").read_text())
    assert record["config"]["setting"] == "i" and record["data"]["pairs"] == 8
    assert len(json.loads((out / "loss.json").read_text())) == 3
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["before"]["protocol"]["hash"] == evaluation["after"]["protocol"]["hash"]
    transfer = json.loads((out / "role_transfer.json").read_text())
    units = sum(map(sum, transfer["counts"]))
    assert units == sum(map(sum, transfer["heads"])) + sum(map(sum, transfer["neurons"])) == 2 * 4 + 2 * 48

    base, _ = tiny_model("llama")
    tuned = AutoModelForCausalLM.from_pretrained(out / "model")
    masks = ParamMasks.load(out / "masks.safetensors")
    assert masks.frozen_units.any() and masks.slices
    for name, parameter in base.named_parameters():
        trainable = masks.trainable(name, parameter.shape)
        after = tuned.get_parameter(name).detach()
        assert torch.equal(after[~trainable], parameter.detach()[~trainable]), name
        if trainable.any():  # norms of layers with frozen units are frozen whole (rule "function")
            assert not torch.equal(after[trainable], parameter.detach()[trainable]), name


def test_freeze_without_a_unit_map_is_refused(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "response": "b"}])
    code = main(
        ["finetune", "--model", "builtin:tiny-llama", "--data", data, "--mode", "freeze", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "needs --units" in capsys.readouterr().err


def test_finetune_lora_ru_writes_an_adapter_and_the_merged_model(tmp_path, capsys):
    utility = write_jsonl(
        tmp_path / "u.jsonl", [{"prompt": f"add {i} and 1", "response": f"It is {i + 1}."} for i in range(8)]
    )
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Say {i}.", "response": f"I say {i}."} for i in range(8)])
    out = tmp_path / "run"
    flags = ["--model", "builtin:tiny-llama", "--data", data, "--mode", "budget", "--utility-data", utility]
    flags += ["--budget-samples", "8", "--lora-rank", "2", "--lora-alpha", "4", "--max-steps", "2", "--lr", "1e-2"]
    assert main(["finetune", *flags, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LoRA rank 2 (alpha 4)" in printed and "the adapter may change" in printed
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (
        adapter["r"] == 2 and adapter["lora_alpha"] == 4 and adapter["base_model_name_or_path"] == "builtin:tiny-llama"
    )
    record = json.loads((out / "finetune_config.json").read_text())
    assert record["config"]["lora_rank"] == 2 and record["lora"]["trainable_parameters"] > 0
    merged = AutoModelForCausalLM.from_pretrained(out / "model")  # plain transformers: no peft needed
    base, _ = tiny_model("llama")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), merged.parameters()))
