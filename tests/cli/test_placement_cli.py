"""`--device-map`, `--max-memory` and `--offload-folder` (the Placement fields) reach the loader."""

import torch

from ssah.cli import main
from ssah_engine.testing import tiny_model
from ssah_engine.unitmap import UnitMap
from tests.engine.conftest import write_jsonl


def test_audit_with_disk_offload_writes_the_plain_unit_map(tmp_path, capsys):
    model, tokenizer = tiny_model("llama", num_layers=4, seed=1)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    weights = (tmp_path / "model" / "model.safetensors").stat().st_size
    safety = write_jsonl(
        tmp_path / "s.jsonl", [{"prompt": f"bad {i}", "response": f"Sorry, no {i}."} for i in range(8)]
    )
    utility = write_jsonl(
        tmp_path / "u.jsonl", [{"prompt": f"add {i}", "response": f"It is {i + 1}."} for i in range(8)]
    )
    common = ["audit", "--model", str(tmp_path / "model"), "--safety-data", safety, "--utility-data", utility]
    common += ["--samples", "8", "--dtype", "float32"]
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "plain")]) == 0
    spread = ["--device-map", "auto", "--max-memory", f"cpu={int(0.7 * weights)}"]
    spread += ["--offload-folder", str(tmp_path / "offload")]
    assert main([*common, *spread, "--out", str(tmp_path / "spread")]) == 0
    plain, found = UnitMap.load(tmp_path / "plain"), UnitMap.load(tmp_path / "spread")
    assert torch.equal(found.labels, plain.labels)
    torch.testing.assert_close(found.z_safety, plain.z_safety, rtol=1e-5, atol=1e-6)


def test_placement_flags_refuse_what_they_cannot_do(tmp_path, capsys):
    base = ["audit", "--model", "builtin:tiny-llama", "--out", str(tmp_path / "o")]
    assert main([*base, "--device", "cpu", "--device-map", "auto"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--max-memory", "cpu=1GiB"]) == 2
    assert "give device_map too" in capsys.readouterr().err
    assert main([*base, "--device-map", "auto"]) == 2
    assert "built in memory" in capsys.readouterr().err
