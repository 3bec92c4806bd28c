"""`ssah finetune` under torchrun (2 gloo ranks on CPU) against the same command in one process."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ssah.cli import main
from ssah_engine.finetune import ParamMasks
from ssah_engine.testing import tiny_model
from tests.engine.conftest import write_jsonl

# 8 pairs, 2 per micro-batch, 2 micro-batches per step: each rank takes one micro-batch of each step.
FLAGS = ["--model", "builtin:tiny-llama", "--mode", "freeze", "--setting", "i", "--max-steps", "3"]
FLAGS += ["--batch-size", "2", "--grad-accum", "2", "--lr", "1e-2", "--weight-decay", "0.1", "--max-length", "64"]
FLAGS += ["--warmup-ratio", "0", "--max-grad-norm", "1.0", "--log-every", "1"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny audit's unit map, the training pairs, and the single-process run of the command."""
    root = tmp_path_factory.mktemp("torchrun")
    safety = write_jsonl(
        root / "s.jsonl", [{"prompt": f"bad thing {i}", "response": f"Sorry, no {i}."} for i in range(8)]
    )
    utility = write_jsonl(
        root / "u.jsonl", [{"prompt": f"add {i} and 1", "response": f"It is {i + 1}."} for i in range(8)]
    )
    data = write_jsonl(
        root / "d.jsonl", [{"prompt": f"Name colour {i}.", "response": f"Colour {i} is blue."} for i in range(8)]
    )
    audit = ["audit", "--model", "builtin:tiny-llama", "--safety-data", safety, "--utility-data", utility]
    assert main([*audit, "--samples", "8", "--cuts", "0.1,0.05,0.1", "--out", str(root / "map")]) == 0
    flags = [*FLAGS, "--data", data, "--units", str(root / "map")]
    assert main(["finetune", *flags, "--out", str(root / "single")]) == 0
    return root, flags


def torchrun(flags: list[str], out, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "ssah.cli", "finetune", *flags, *extra, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def assert_same_training(single, out) -> None:
    """Trainable entries equal to the single-process run within 1e-6, frozen ones bit-exact against the base."""
    base, _ = tiny_model("llama")  # what builtin:tiny-llama builds
    masks = ParamMasks.load(out / "masks.safetensors")
    assert masks.slices and masks.whole
    one, two = (
        load_file(str(single / "model" / "model.safetensors")),
        load_file(str(out / "model" / "model.safetensors")),
    )
    assert one.keys() == two.keys()
    for name, parameter in base.named_parameters():
        trainable = masks.trainable(name, parameter.shape)
        original = parameter.detach()
        assert torch.equal(two[name][~trainable], original[~trainable]), name
        assert torch.allclose(two[name][trainable], one[name][trainable], rtol=0, atol=1e-6), name
        if trainable.any():
            assert not torch.equal(two[name][trainable], original[trainable]), name  # it did train
    losses = [[entry["loss"] for entry in json.loads((run / "loss.json").read_text())] for run in (single, out)]
    assert len(losses[0]) == 3 and torch.allclose(torch.tensor(losses[1]), torch.tensor(losses[0]), atol=1e-6)


def test_two_gloo_ranks_train_as_one_process_and_rank_0_writes(job, tmp_path):
    root, flags = job
    out = tmp_path / "ddp"
    done = torchrun(flags, out, "--checkpoint-every", "2")
    assert_same_training(root / "single", out)
    record = json.loads((out / "finetune_config.json").read_text())
    assert record["distributed"] == {"world": 2, "fsdp": False}
    assert json.loads((root / "single" / "finetune_config.json").read_text())["distributed"] is None
    # The shard reached the trainer: only a sharded run all-reduces its gradients.
    assert "gradient all-reduce:" in done.stderr
    # One writer: one summary, one output directory with the single-process run's files (+ its checkpoint).
    assert done.stdout.count("model in ") == 1 and "data-parallel over 2 ranks" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(p.name for p in (root / "single").iterdir()), "checkpoints"]
    )
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]

    # Every rank resumes from rank 0's checkpoint (a rank starting over would run steps the other does not join).
    resumed = torchrun(flags, out, "--checkpoint-every", "2", "--resume")
    assert "resumed from" in resumed.stderr and "step 3/3" in resumed.stderr and "step 1/3" not in resumed.stderr
    assert_same_training(root / "single", out)


def test_fsdp_ranks_train_as_one_process(job, tmp_path):
    root, flags = job
    out = tmp_path / "fsdp"
    done = torchrun(flags, out, "--fsdp", "--no-packed-optimizer")  # packed moments: not on sharded tensors
    assert_same_training(root / "single", out)
    assert json.loads((out / "finetune_config.json").read_text())["distributed"] == {"world": 2, "fsdp": True}
    assert "(FSDP, 2 ranks)" in done.stderr and done.stdout.count("model in ") == 1


def test_fsdp_refuses_checkpoints_and_a_single_process(job, tmp_path, capsys):
    root, flags = job
    assert (
        main(
            [
                "finetune",
                *flags,
                "--fsdp",
                "--no-packed-optimizer",
                "--checkpoint-every",
                "2",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 2
    )
    assert "the FSDP path trains without checkpoints" in capsys.readouterr().err
    assert main(["finetune", *flags, "--fsdp", "--out", str(tmp_path / "p")]) == 2  # packed_optimizer is the default
    assert "unset packed_optimizer" in capsys.readouterr().err
    flags = [*flags, "--fsdp", "--no-packed-optimizer"]
    assert main(["finetune", *flags, "--evaluate", "--out", str(tmp_path / "b")]) == 2
    assert "unset evaluate" in capsys.readouterr().err
    assert main(["finetune", *flags, "--out", str(tmp_path / "c")]) == 2
    assert "run under torchrun" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
