"""`ssah worker --gpus 0,1,...`: one worker process per GPU, each seeing only its GPU and consuming its class's
queues (the GPU list and memory come from a fake nvidia-smi)."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys

import pytest

from ssah.commands.worker import gpu_memory, plan_gpu_workers, supervise

CLASSES = ["24g", "80g", "141g"]


def _args(**overrides) -> argparse.Namespace:
    values = dict(queues=None, pool="prefork", loglevel="INFO", gpu_class=None, hostname=None)
    return argparse.Namespace(**{**values, **overrides})


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """Four GPUs: two H100 80GB, an RTX 4090 and a 16 GB card."""
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nprintf '0, 81559\\n1, 81559\\n2, 24564\\n3, 16384\\n'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")


def test_each_gpu_gets_its_own_process_environment_and_class_queues(fake_nvidia_smi):
    assert gpu_memory() == {0: 81559 * 2**20, 1: 81559 * 2**20, 2: 24564 * 2**20, 3: 16384 * 2**20}
    environ = {"SSAH_BROKER_URL": "redis://r:6379/0", "SSAH_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    planned = plan_gpu_workers([0, 2, 3], _args(), CLASSES, environ)
    assert [worker.env["CUDA_VISIBLE_DEVICES"] for worker in planned] == ["0", "2", "3"]
    assert all(w.env["SSAH_DEVICE"] == "cuda" and w.env["SSAH_BROKER_URL"] == "redis://r:6379/0" for w in planned)
    assert [worker.gpu_class for worker in planned] == ["80g", "24g", None]
    assert [worker.queues for worker in planned] == [["gpu", "gpu-24g", "gpu-80g"], ["gpu", "gpu-24g"], ["gpu"]]
    first = planned[0].argv
    assert first[:4] == [sys.executable, "-m", "ssah.cli", "worker"]
    assert (
        first[first.index("--queues") + 1] == "gpu,gpu-24g,gpu-80g"
        and first[first.index("--hostname") + 1] == "gpu0@%h"
    )
    assert first[first.index("--concurrency") + 1] == "1"


def test_a_declared_class_or_queues_win_and_unknown_gpus_are_refused(fake_nvidia_smi):
    planned = plan_gpu_workers([0, 1], _args(gpu_class="24g"), CLASSES, {})
    assert [worker.queues for worker in planned] == [["gpu", "gpu-24g"]] * 2
    assert plan_gpu_workers([0], _args(queues="gpu-80g"), CLASSES, {})[0].queues == ["gpu-80g"]
    assert plan_gpu_workers([5], _args(), [], {})[0].queues == ["gpu"]  # no classes: nvidia-smi is not asked
    with pytest.raises(ValueError, match="no GPU 7"):
        plan_gpu_workers([0, 7], _args(), CLASSES, {})
    with pytest.raises(ValueError, match="not one of"):
        plan_gpu_workers([0], _args(gpu_class="40g"), CLASSES, {})


def test_supervise_starts_every_child_with_its_environment_and_stops_the_rest(fake_nvidia_smi, tmp_path):
    planned = plan_gpu_workers([0, 2], _args(), CLASSES, dict(os.environ))
    seen = tmp_path / "seen"
    started = []

    def popen(argv, env):
        # Each child writes what it sees; GPU 2's child exits first, GPU 0's waits to be stopped.
        gpu = env["CUDA_VISIBLE_DEVICES"]
        code = (
            f"import os, sys, time; open({str(seen)!r} + os.environ['CUDA_VISIBLE_DEVICES'], 'w')"
            f".write(os.environ['CUDA_VISIBLE_DEVICES'] + ' ' + {argv[argv.index('--queues') + 1]!r}); "
            + (
                f"[time.sleep(0.05) for _ in range(400) if not os.path.exists({str(seen)!r} + '0')]; sys.exit(3)"
                if gpu == "2"
                else "time.sleep(60)"
            )
        )
        child = subprocess.Popen([sys.executable, "-c", code], env=env)
        started.append(child)
        return child

    assert supervise(planned, popen=popen) == 3
    assert (tmp_path / "seen0").read_text() == "0 gpu,gpu-24g,gpu-80g"
    assert (tmp_path / "seen2").read_text() == "2 gpu,gpu-24g"
    assert all(child.poll() is not None for child in started)  # the sleeping one was stopped
