"""Run the five stages in order, time each, and keep each stage's summary so a rerun can skip it.

A stage is skipped when ``DIR/stages/<name>.json`` exists and was written under the same plan
(same settings hash); delete that file, or change a setting, to run it again.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ssah_engine.loading import LoadOptions
from ssah_engine.unitmap import library_versions

from . import steps
from .plan import Plan
from .report import write_report

STAGES = ("baseline", "alignment", "audit", "ablation", "downstream")


def machine(options: LoadOptions) -> dict:
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        **library_versions(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def reproduce(
    plan: Plan, out: str | Path, options: LoadOptions, say: steps.Say, command: str = "", stop_after: str | None = None
) -> dict:
    """Run (or resume) every stage, or those up to ``stop_after``; write DIR/results.json and DIR/results.md."""
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"stop_after must be one of {', '.join(STAGES)}, got {stop_after!r}")
    out = Path(out)
    (out / "stages").mkdir(parents=True, exist_ok=True)
    ctx = steps.Context(plan, out, options, say)
    started = time.perf_counter()
    results: dict = {
        "command": command,
        "plan": plan.to_dict(),
        "plan_hash": plan.hash,
        "protocol": {"hash": ctx.protocol.hash, "settings": ctx.protocol.to_dict()},
        "machine": machine(options),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": {},
    }

    def stage(number: int, name: str, function, *args) -> dict:
        path = out / "stages" / f"{name}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("plan_hash") == plan.hash:
                say(f"[{_clock(started)}] stage {number}/5 {name}: done earlier ({saved['seconds']:.0f}s), reusing")
                results["stages"][name] = {"seconds": saved["seconds"], "reused": True}
                return _moved(saved["result"], saved.get("out"), str(out))
        say(f"[{_clock(started)}] stage {number}/5 {name}")
        mark = time.perf_counter()
        result = function(ctx, *args)
        seconds = round(time.perf_counter() - mark, 1)
        record = {"plan_hash": plan.hash, "out": str(out), "seconds": seconds, "result": result}
        path.write_text(json.dumps(record, indent=2) + "\n")
        results["stages"][name] = {"seconds": seconds, "reused": False}
        say(f"[{_clock(started)}] stage {number}/5 {name} done in {_duration(seconds)}")
        return result

    last = STAGES.index(stop_after) if stop_after else len(STAGES) - 1
    wanted = lambda name: STAGES.index(name) <= last  # noqa: E731
    results["baseline"] = stage(1, "baseline", steps.baseline)
    if plan.aligned_as_shipped:  # aligned by its makers: the baseline is the aligned model
        results["alignment"] = {}
        results["stages"]["alignment"] = {"seconds": 0.0, "reused": False, "skipped": "aligned as shipped"}
        say(f"[{_clock(started)}] stage 2/5 alignment: skipped, {plan.model} is aligned as shipped")
        aligned, dense = plan.model, results["baseline"]
    elif wanted("alignment"):
        results["alignment"] = stage(2, "alignment", steps.alignment)
        aligned, dense = results["alignment"]["full"]["model"], results["alignment"]["full"]  # the paper's "aligned"
    if wanted("audit"):
        results["audit"] = stage(3, "audit", steps.audit, aligned)
    if wanted("ablation"):
        results["ablation"] = stage(4, "ablation", steps.ablation, aligned, results["audit"]["unit_map"], dense)
    if wanted("downstream"):
        results["downstream"] = stage(5, "downstream", steps.downstream, aligned, results["audit"]["unit_map"])
    results["stopped_after"] = STAGES[last]
    results.setdefault("alignment", {})
    results["models"] = {
        **{f"aligned_{arm}": entry["model"] for arm, entry in results["alignment"].items()},
        **{f"downstream_{arm}": entry["model"] for arm, entry in results.get("downstream", {}).items()},
    }
    steps.refresh_metrics(results, out)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["stage_seconds_total"] = round(sum(entry["seconds"] for entry in results["stages"].values()), 1)
    results["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_report(results, out)
    return results


def _moved(value, saved_out: str | None, out: str):
    """``value`` with the paths under the run directory it was written in moved to ``out``.

    A run directory copied elsewhere (another machine, a results folder) resumes there: its stage
    files name the unit map and trained models by where they were written.
    """
    if saved_out is None or saved_out == out:
        return value
    if isinstance(value, dict):
        return {key: _moved(item, saved_out, out) for key, item in value.items()}
    if isinstance(value, list):
        return [_moved(item, saved_out, out) for item in value]
    if isinstance(value, str) and (value == saved_out or value.startswith(saved_out + "/")):
        return out + value[len(saved_out) :]
    return value


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _clock(started: float) -> str:
    return _duration(time.perf_counter() - started)
