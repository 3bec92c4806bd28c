import json

import torch

from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.classes import Cuts
from ssah_engine.transfer import role_transfer
from ssah_engine.unitmap import UnitMap


def test_artifact_round_trip_and_summary(tmp_path, tiny_llama, safety_set, utility_set):
    unit_map = run_audit(tiny_llama, safety_set, utility_set, AuditConfig(samples=10, cuts=Cuts(0.1, 0.05, 0.1)))
    unit_map.save(tmp_path / "map")
    loaded = UnitMap.load(tmp_path / "map")
    assert torch.equal(loaded.labels, unit_map.labels)
    assert torch.equal(loaded.z_safety, unit_map.z_safety)
    assert torch.equal(loaded.z_utility, unit_map.z_utility)
    assert torch.equal(loaded.neuron_input_mean, unit_map.neuron_input_mean)
    assert loaded.summary() == unit_map.summary()

    summary = json.loads((tmp_path / "map" / "summary.json").read_text())
    assert set(summary["classes"]) == {"SCU", "UCU", "CU", "RU"}
    assert sum(c["units"] for c in summary["classes"].values()) == 8 + 96
    assert abs(sum(c["param_fraction"] for c in summary["classes"].values()) - 1) < 1e-9
    assert len(summary["layers"]) == 2
    assert sum(layer["neurons"]["RU"] for layer in summary["layers"]) == summary["classes"]["RU"]["neurons"]
    assert summary["config"]["cuts"] == {"ru": 0.1, "scu": 0.05, "ucu": 0.1}
    assert summary["data"]["safety"]["sha256"] == safety_set.sample(10, 0).sha256  # the seeded sample (default)
    assert summary["model"]["family"] == "llama"
    assert {"torch", "transformers", "ssah_engine"} <= set(summary["versions"])


def test_role_transfer_cross_tab(tiny_llama, safety_set, utility_set):
    before = run_audit(tiny_llama, safety_set, utility_set, AuditConfig(samples=10))
    after = UnitMap(**{**before.__dict__, "labels": before.labels.clone()})
    after.labels[:4] = 3  # four heads become RU
    result = role_transfer(before, after)
    counts = torch.tensor(result["counts"])
    assert counts.sum() == before.space.size
    assert counts.diagonal().sum() == before.space.size - int((before.labels[:4] != 3).sum())
    for old in before.labels[:4].tolist():
        assert counts[old, 3] >= 1
    assert result["unchanged_fraction"] == counts.diagonal().sum().item() / before.space.size
