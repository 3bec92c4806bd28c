"""Calibration pairs are drawn as the authors drew them: shuffle(seed=0).select(range(N)) (issue 13, §4)."""

import json

import datasets
import pytest

from ssah.cli import main
from ssah_engine.audit import AuditConfig, run_audit

from .conftest import make_dataset, write_jsonl


def numbered(count: int):
    return make_dataset("numbered", [(f"question {i}?", f"answer {i}.") for i in range(count)])


@pytest.mark.parametrize("seed", [0, 7])
def test_sample_is_the_hugging_face_shuffle_select(seed):
    dataset = numbered(40)
    table = datasets.Dataset.from_list([{"prompt": e.prompt, "response": e.response} for e in dataset.examples])
    expected = table.shuffle(seed=seed).select(range(16))["prompt"]
    assert [example.prompt for example in dataset.sample(16, seed).examples] == list(expected)


def test_sample_of_more_than_the_set_is_the_whole_set_shuffled():
    dataset = numbered(5)
    drawn = dataset.sample(100, 0)
    assert sorted(e.prompt for e in drawn.examples) == sorted(e.prompt for e in dataset.examples)
    assert drawn.examples != dataset.examples
    with pytest.raises(ValueError, match="seed"):
        dataset.sample(3, -1)


def test_audit_scores_the_seeded_sample_and_records_the_seed(tiny_llama, utility_set):
    safety = numbered(12)
    unit_map = run_audit(tiny_llama, safety, utility_set, AuditConfig(samples=4, seed=3))
    assert unit_map.config["sampling"] == "shuffle" and unit_map.config["seed"] == 3
    assert unit_map.data["safety"]["sha256"] == safety.sample(4, 3).sha256 != safety.take(4).sha256
    assert unit_map.data["safety"]["seed"] == 3

    first = run_audit(tiny_llama, safety, utility_set, AuditConfig(samples=4, sampling="first"))
    assert first.data["safety"]["sha256"] == safety.take(4).sha256 and first.data["safety"]["seed"] is None


def test_audit_config_refuses_an_unknown_sampling():
    with pytest.raises(ValueError, match="sampling"):
        AuditConfig(sampling="random")


def test_cli_seed_and_first_n_reach_the_unit_map(tmp_path):
    rows = [{"prompt": f"q {i}", "response": f"a {i}."} for i in range(10)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    common = ["audit", "--model", "builtin:tiny-llama", "--safety-data", data, "--utility-data", data, "--samples", "3"]
    assert main([*common, "--seed", "5", "--out", str(tmp_path / "seeded")]) == 0
    assert main([*common, "--sampling", "first", "--out", str(tmp_path / "first")]) == 0
    seeded = json.loads((tmp_path / "seeded" / "summary.json").read_text())
    first = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert (seeded["config"]["sampling"], seeded["config"]["seed"]) == ("shuffle", 5)
    assert first["config"]["sampling"] == "first"
    assert seeded["data"]["safety"]["sha256"] != first["data"]["safety"]["sha256"]
