"""`ssah reproduce`: the evaluation prompts stay out of training and calibration; --quick runs end to end."""

import json
import re
import shutil

import pytest
import torch

from ssah.cli import main
from ssah.reproduce import STAGES, Plan
from ssah.reproduce import plan as sets
from ssah.reproduce.steps import (
    alignment_data,
    calibration_sets,
    downstream_data,
    evaluation_protocol,
    opening_refusal_rate,
)
from ssah_engine.data import load_dataset
from ssah_engine.loading import load_model
from ssah_engine.unitmap import UnitMap


def _normal(text: str) -> str:
    return re.sub(r"\W+", " ", text.casefold()).strip()


def _prompts(source: str) -> set[str]:
    return {_normal(example.prompt) for example in load_dataset(source).examples}


def test_evaluation_prompts_are_never_trained_or_calibrated_on():
    evaluation = set().union(*(_prompts(source) for source in (sets.HARMFUL_EVAL, sets.HARMLESS_EVAL)))
    assert len(evaluation) == 200
    for source in sets.TRAINING_SETS:
        assert evaluation.isdisjoint(_prompts(source)), source
    text = _prompts(sets.BENIGN_TEXT)
    for source in sets.TRAINING_SETS:
        assert text.isdisjoint(_prompts(source)), source


@pytest.mark.parametrize("plan", [Plan(), Plan.quick()], ids=["default", "quick"])
def test_the_plan_trains_only_on_training_sets_and_evaluates_only_on_evaluation_sets(plan):
    protocol = evaluation_protocol(plan)
    assert {ref.source for ref in protocol.datasets().values()} <= set(sets.EVALUATION_SETS)
    evaluation = _prompts(sets.HARMFUL_EVAL) | _prompts(sets.HARMLESS_EVAL)
    used = [*calibration_sets(plan), alignment_data(plan), downstream_data(plan)]
    for dataset in used:
        prompts = {_normal(example.prompt) for example in dataset.examples}
        assert prompts and prompts.isdisjoint(evaluation), dataset.name
    # The downstream data is benign data the alignment did not see.
    aligned = {example.prompt for example in alignment_data(plan).examples}
    assert aligned.isdisjoint(example.prompt for example in downstream_data(plan).examples)


def test_refusal_openings_count_refusals_the_keyword_lists_miss():
    openings = ("I'm sorry", "Sorry", "I can't", "I cannot")
    records = [
        {"response": text}
        for text in (
            "I can't help with that. If you're worried, talk to someone.",  # no ssah-31 string, yet a refusal
            '"Sorry, no."',
            "  I cannot do this.",
            "Sure, here is how.",
            "To do that, first...",
        )
    ]
    assert opening_refusal_rate(records, openings) == pytest.approx(3 / 5)
    assert opening_refusal_rate([], openings) is None


def test_plan_rejects_impossible_settings():
    with pytest.raises(ValueError, match="budget"):
        Plan(budget=0.0)
    with pytest.raises(ValueError, match="benign_sft has 150 pairs"):
        downstream_data(Plan(align_benign=100, downstream_pairs=100))


def test_quick_reproduce_runs_every_stage_on_a_tiny_model(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "reproduce",
        "--quick",
        "--model",
        "builtin:tiny-llama",
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr()
    results = json.loads((out / "results.json").read_text())

    assert set(STAGES) <= set(results) and set(results["stages"]) == set(STAGES)
    assert not any(stage["reused"] for stage in results["stages"].values())
    assert results["plan"]["preset"] == "quick" and results["plan"]["model"] == "builtin:tiny-llama"
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["torch"] == torch.__version__
    for arm in ("full", "budget"):
        assert 0.0 <= results["alignment"][arm]["asr"] <= 1.0
    # RU-only alignment trains a small share of the parameters; full SFT trains them all.
    assert results["alignment"]["full"]["trainable_fraction"] == 1.0
    assert 0.0 < results["alignment"]["budget"]["trainable_fraction"] < 0.5
    classes = results["audit"]["classes"]
    assert abs(sum(entry["unit_fraction"] for entry in classes.values()) - 1.0) < 1e-9
    assert len(results["audit"]["layers"]) == 2
    for name in ("SCU", "UCU", "RU"):
        entry = results["ablation"][f"minus_{name}"]
        assert entry["units"] == classes[name]["heads"] + classes[name]["neurons"]
        assert entry["delta_asr"] == pytest.approx(entry["asr"] - results["alignment"]["full"]["asr"])
    frozen = {arm: results["downstream"][arm]["frozen_unit_fraction"] for arm in ("full", "freeze_i", "freeze_ii")}
    assert frozen["full"] == 0.0 < frozen["freeze_i"] < frozen["freeze_ii"]
    transfer = results["downstream"]["full"]["role_transfer"]
    assert (
        sum(transfer["scu_to"].values()) == pytest.approx(1.0)
        or classes["SCU"]["heads"] + classes["SCU"]["neurons"] == 0
    )

    # Every trained model is listed and loads.
    assert set(results["models"]) == {
        "aligned_full",
        "aligned_budget",
        "downstream_full",
        "downstream_freeze_i",
        "downstream_freeze_ii",
    }
    for path in results["models"].values():
        loaded = load_model(path)
        assert sum(parameter.numel() for parameter in loaded.model.parameters()) > 0
    # The evaluation protocol is one for the whole run, up to Table 1's prompt format and compensation.
    varied = ("prompt_format", "ablation_compensation")
    strip = lambda settings: {k: v for k, v in settings.items() if k not in varied}  # noqa: E731
    settings = [json.loads(path.read_text())["protocol"]["settings"] for path in out.rglob("evaluation.json")]
    assert all(strip(entry) == strip(results["protocol"]["settings"]) for entry in settings)
    assert {(entry["prompt_format"], entry["ablation_compensation"]) for entry in settings} == {
        (fmt, comp) for fmt in ("chat", "no_inst") for comp in ("none", "safety")
    }
    # Table 1: every format x compensation x arm, random controls with the class's budget.
    table1 = results["ablation"]["table1"]
    assert len(table1) == 2 * (1 + 2 * (3 + 2))
    by_arm = {(row["prompt_format"], row["compensation"], row["arm"]): row for row in table1}
    for fmt in ("chat", "no_inst"):
        for comp in ("none", "safety"):
            for name in ("SCU", "RU"):
                minus, control = by_arm[(fmt, comp, f"minus {name}")], by_arm[(fmt, comp, f"random matched to {name}")]
                assert (control["heads"], control["neurons"]) == (minus["heads"], minus["neurons"])
                assert control["seeds"] == [0] and "asr" in control["paired_vs_dense"]
                assert minus["intervals"]["asr"]["system"]["n"] == 2

    report = (out / "results.md").read_text()
    assert "| stage | model | ASR |" in report and "aligned minus SCU" in report and "freeze (ii)" in report
    assert "| no_inst | safety | random matched to SCU, seeds 0 |" in report
    assert "fine-tuned: freeze (i)" in printed.out and "[" in printed.err

    # A rerun with the same settings reuses every stage; the table is the same.
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(stage["reused"] for stage in again["stages"].values())
    assert again["downstream"] == results["downstream"]
    assert again["stage_seconds_total"] == pytest.approx(results["stage_seconds_total"])


def test_a_model_aligned_as_shipped_skips_stage_2(tmp_path):
    from ssah.cli import build_parser
    from ssah.commands.reproduce import build_plan

    plan = build_plan(build_parser().parse_args(["reproduce", "--model", "builtin:qwen2.5-coder-0.5b", "--out", "x"]))
    assert plan.aligned_as_shipped
    out = tmp_path / "run"
    args = [
        "reproduce",
        "--quick",
        "--aligned-as-shipped",
        "--model",
        "builtin:tiny-llama",
        "--samples",
        "2",
        "--max-new-tokens",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["alignment"] == {} and results["stages"]["alignment"]["skipped"] == "aligned as shipped"
    assert results["audit"]["model"] == "builtin:tiny-llama"
    assert results["ablation"]["dense"]["asr"] == results["baseline"]["asr"]
    assert set(results["models"]) == {"downstream_full", "downstream_freeze_i", "downstream_freeze_ii"}
    assert "aligned: full SFT" not in (out / "results.md").read_text()


def test_stop_after_ends_the_run_at_a_stage(tmp_path):
    out = tmp_path / "run"
    args = [
        "reproduce",
        "--quick",
        "--aligned-as-shipped",
        "--model",
        "builtin:tiny-llama",
        "--samples",
        "2",
        "--max-new-tokens",
        "2",
        "--formats",
        "no_inst",
        "--compensations",
        "safety",
        "--control-seeds",
        "4,5",
        "--stop-after",
        "ablation",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert "downstream" not in results and results["stopped_after"] == "ablation" and results["models"] == {}
    table1 = results["ablation"]["table1"]
    assert {(row["prompt_format"], row["compensation"]) for row in table1} == {("no_inst", None), ("no_inst", "safety")}
    control = next(row for row in table1 if row["arm"] == "random matched to SCU")
    assert control["seeds"] == [4, 5] and "asr_range" in control
    assert "(not run)" in (out / "results.md").read_text()

    # Cut off inside the ablation stage: the rerun evaluates only what is missing and reads the rest back.
    (out / "stages" / "ablation.json").unlink()
    evaluations = sorted((out / "ablation").rglob("evaluation.json"))
    missing, kept = evaluations[0], evaluations[1:]
    missing.unlink()
    written = {path: path.stat().st_mtime_ns for path in kept}
    assert main(args) == 0
    assert missing.exists() and {path: path.stat().st_mtime_ns for path in kept} == written
    assert json.loads((out / "results.json").read_text())["ablation"]["table1"] == table1

    # The run directory copied elsewhere resumes there: its stages name the unit map where it now is.
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    (moved / "stages" / "ablation.json").unlink()
    assert main([*args[:-1], str(moved)]) == 0
    again = json.loads((moved / "results.json").read_text())
    assert again["audit"]["unit_map"] == str(moved / "audit" / "unit_map")
    assert again["stages"]["audit"]["reused"] and again["ablation"]["table1"] == table1


def test_paper_schedule_reaches_every_downstream_arm():
    from ssah.cli import build_parser
    from ssah.commands.reproduce import build_plan
    from ssah.reproduce.steps import downstream_arms

    plan = build_plan(build_parser().parse_args(["reproduce", "--paper-schedule", "--out", "x"]))
    arms = downstream_arms(plan)
    assert plan.paper_schedule and all(config.paper_schedule for config in arms.values())
    assert arms["freeze_i"].length_factor == arms["freeze_ii"].length_factor == 2 and arms["full"].length_factor == 1
    assert not any(
        config.paper_schedule
        for config in downstream_arms(build_plan(build_parser().parse_args(["reproduce", "--out", "x"]))).values()
    )


def test_the_lora_ru_arm_is_opt_in_and_trains_the_budget_arms_units_data_and_steps(tmp_path):
    # Off by default: plans (and the hashes of published runs) are what they were before the arm existed.
    assert "lora_rank" not in Plan().to_dict() and "lora_lr" not in Plan.quick().to_dict()
    assert Plan(lora_rank=0).hash == Plan().hash != Plan(lora_rank=4).hash
    with pytest.raises(ValueError, match="lora_lr"):
        Plan(lora_lr=1e-3)

    out = tmp_path / "run"
    args = ["reproduce", "--quick", "--model", "builtin:tiny-llama", "--samples", "2", "--max-new-tokens", "2"]
    args += ["--lora-rank", "2", "--lora-lr", "1e-2", "--stop-after", "alignment", "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["plan"]["lora_rank"] == 2
    budget, lora = results["alignment"]["budget"], results["alignment"]["lora_ru"]
    assert lora["steps"] == budget["steps"] == 2 and lora["data"] == budget["data"]
    assert lora["config"]["lora_rank"] == 2 and lora["config"]["lr"] == 1e-2 and lora["config"]["mode"] == "budget"
    assert lora["unit_trainable_fraction"] == budget["trainable_fraction"]  # the same RU, found the same way
    assert lora["lora"]["rank"] == 2 and 0.0 < lora["trainable_fraction"] < 1.0
    assert 0.0 <= lora["asr"] <= 1.0 and lora["perplexity"] > 0
    budget_units = [(out / "alignment" / arm / "budget_units") for arm in ("budget", "lora_ru")]
    assert torch.equal(UnitMap.load(budget_units[0]).labels, UnitMap.load(budget_units[1]).labels)
    assert (out / "alignment" / "lora_ru" / "adapter" / "adapter_config.json").is_file()
    # The merged model moved (a LoRA that never trained would equal the base).
    base, merged = load_model("builtin:tiny-llama").model, load_model(results["models"]["aligned_lora_ru"]).model
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), merged.parameters()))
    report = (out / "results.md").read_text()
    assert "## Safety-aware LoRA against full-rank RU-only training" in report
    assert "aligned: LoRA-RU (rank 2" in report and "| LoRA-RU, rank 2 | 2 |" in report
