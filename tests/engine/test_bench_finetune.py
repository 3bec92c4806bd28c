"""bench/distributed_sft.py and bench/lora_ru.py in their --tiny modes, so the issue-21 benches cannot rot."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_bench(script: str, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "bench" / script), "--tiny"]
    finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    values = {}
    for line in finished.stdout.splitlines():
        for item in line.split():
            if "=" in item:
                key, value = item.split("=", 1)
                values[key] = value
    return values


def test_the_tiny_distributed_bench_trains_two_ranks_as_one_process(tmp_path):
    values = run_bench("distributed_sft.py", tmp_path)
    # Setting (ii) freezes rows: the reducer sends fewer entries than a dense all-reduce, on both shapes.
    assert 0 < float(values["allreduce_entries_ratio"]) < 1
    assert int(values["allreduce_entries"]) < int(values["dense_allreduce_entries"])
    assert 0 < float(values["full_shape_allreduce_entries_ratio"]) < 1
    assert int(values["full_shape_parameters"]) == 134_515_008  # SmolLM2-135M's parameter count
    assert float(values["step_time_ratio_2ranks"]) > 0 and float(values["allreduce_s"]) > 0
    assert float(values["max_abs_delta_vs_single"]) < 1e-5
    assert values["frozen_bit_exact"] == "True"
    assert 0.4 < float(values["fsdp_param_fraction_per_rank"]) < 0.6  # each of 2 ranks holds about half
    assert float(values["fsdp_step_time_ratio_2ranks"]) > 0
    assert float(values["fsdp_max_abs_delta_vs_single"]) < 1e-5
    assert values["fsdp_frozen_bit_exact"] == "True"
    assert not list(tmp_path.iterdir())  # the ranks' results went to a temporary directory


def test_the_tiny_lora_bench_changes_only_ru(tmp_path):
    values = run_bench("lora_ru.py", tmp_path)
    for key in ("trainable_params_ratio", "optimizer_state_ratio", "step_time_ratio"):
        assert float(values[key]) > 0, key
    assert 0 < float(values["saved_bytes_ratio"]) < 1  # an adapter is smaller than the whole model
    # Both arms trained (RU entries moved) and neither touched an entry outside RU.
    assert int(values["ru_changed"]) > 0 and int(values["ru_changed_full_rank"]) > 0
    assert values["outside_ru_changed"] == "0" and values["outside_ru_changed_full_rank"] == "0"
    # Packed AdamW keeps two float32 moments per trainable entry (plus step counts) in both arms.
    ratio = int(values["lora_optimizer_state_bytes"]) / int(values["ru_full_optimizer_state_bytes"])
    trainable = int(values["lora_trainable"]) / int(values["ru_full_trainable"])
    assert abs(ratio - trainable) < 0.01 * trainable
    assert not list(tmp_path.iterdir())
