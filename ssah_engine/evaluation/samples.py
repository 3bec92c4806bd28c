"""Per-sample logs: one JSON line per prompt and condition (per suffix under ``suffix``) of an evaluation."""

from __future__ import annotations

import json
from pathlib import Path

# The fields of a sample line, in this order; a record's other fields follow.
SAMPLE_FIELDS = (
    "set",
    "index",
    "condition",
    "suffix_index",
    "id",
    "category",
    "prompt",
    "rendered_prompt",
    "response",
    "verdicts",
    "opens_with_refusal",
    "margin",
    "judge",
)


def sample_lines(result: dict) -> list[dict]:
    """The records of an ``evaluate`` result (harmful, then harmless) as sample lines with the protocol hash."""
    lines = []
    for name in ("harmful", "harmless"):
        for record in result["records"][name]:
            ordered = {key: record[key] for key in SAMPLE_FIELDS if key in record}
            lines.append(ordered | record | {"protocol": result["protocol"]["hash"]})
    return lines


def write_samples(result: dict, path: str | Path) -> int:
    """Write ``sample_lines(result)`` as JSONL to ``path``; returns the number of lines."""
    lines = sample_lines(result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return len(lines)
