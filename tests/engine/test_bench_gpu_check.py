"""bench/gpu_check.py in its --tiny mode, so the GPU check cannot rot between lent GPUs."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIGURES = (
    "audit_seconds",
    "audit_peak_mib",
    "forward_seconds",
    "forward_peak_mib",
    "audit_time_ratio",
    "audit_peak_ratio",
    "streamed_audit_seconds",
    "streamed_audit_peak_mib",
    "streamed_time_ratio",
    "streamed_peak_ratio",
    "plain_step_seconds",
    "masked_step_seconds",
    "step_time_ratio",
    "gen_tokens_per_second",
)


def test_the_tiny_gpu_check_prints_every_figure(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--tiny", "--device", "cpu"]
    finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    values = dict(line.split("=", 1) for line in finished.stdout.splitlines() if "=" in line)
    for figure in FIGURES:
        assert float(values[f"tiny_{figure}"]) > 0, figure
    assert values["tiny_streamed_labels_equal"] == "True"  # the streamed audit of the saved checkpoint agrees
    assert int(values["tiny_calibration_tokens"]) == 2 * 8 * 96  # 8 + 8 pairs, each filling its 96 tokens
    # Setting (ii) freezes rows: the packed optimizer keeps less state than plain AdamW.
    assert 0 < float(values["tiny_masked_optimizer_state_mib"]) < float(values["tiny_plain_optimizer_state_mib"])
    assert values["device"] == "cpu" and not (tmp_path / "tiny").exists()
