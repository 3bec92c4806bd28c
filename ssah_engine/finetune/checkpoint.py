"""Resumable checkpoints: trainable tensors, optimizer, scheduler, RNG states and the loss curve.

Only tensors with a trainable element are saved (frozen ones equal the base model's, which a
resumed run loads again). A checkpoint is written to a temporary folder and renamed, so a
crash never leaves half of one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .packed import PackedAdamW, unpacked_state_dict

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
WEIGHTS_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"


def _step_dirs(out_dir: Path) -> list[Path]:
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [path for path in root.glob("step-*") if (path / STATE_FILE).is_file()]
    return sorted(found, key=lambda path: int(path.name.removeprefix("step-")))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = _step_dirs(Path(out_dir))
    return found[-1] if found else None


def save_checkpoint(out_dir, step: int, model: nn.Module, optimizer, scheduler, history: list, keep: int = 1) -> Path:
    """Save the state after ``step`` optimizer steps; keep only the newest ``keep`` checkpoints."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    target = root / f"step-{step}"
    staging = root / f".step-{step}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    weights = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(weights, str(staging / WEIGHTS_FILE))
    rng: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "history": history,
    }
    torch.save(state, staging / STATE_FILE)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    for old in _step_dirs(Path(out_dir))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("checkpoint at step %d: %s", step, target)
    return target


@torch.no_grad()
def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> tuple[int, list]:
    """Load a checkpoint into ``model``/``optimizer``/``scheduler``; return (step, history)."""
    weights = load_file(str(path / WEIGHTS_FILE))
    parameters = dict(model.named_parameters())
    missing = [name for name, p in parameters.items() if p.requires_grad and name not in weights]
    if missing:
        raise ValueError(f"checkpoint {path} lacks trainable tensors {missing[:3]}...; was it another run?")
    for name, tensor in weights.items():
        if name not in parameters or parameters[name].shape != tensor.shape:
            raise ValueError(f"checkpoint {path} does not fit this model (tensor {name})")
        parameters[name].copy_(tensor)
    state = torch.load(path / STATE_FILE, weights_only=True)
    saved_optimizer = state["optimizer"]
    if not isinstance(optimizer, PackedAdamW):  # a packed run resumed on the dense path
        params = [p for group in optimizer.param_groups for p in group["params"]]
        saved_optimizer = unpacked_state_dict(saved_optimizer, params)
    optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state["step"], list(state["history"])
