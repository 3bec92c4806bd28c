"""The model card (README.md) every model the project saves carries.

Its YAML front matter is what the Hugging Face hub and ``huggingface_hub.ModelCard`` read
(``library_name``, ``tags``, ``base_model`` when the source is a hub id); the body says where the
model came from: the source, the unit map (class counts and its hash), what was removed, frozen or
trained, the data hashes and the protocol results known when it was written.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .unitmap import SUMMARY_FILE, TENSORS_FILE, UnitMap, library_versions

CARD_FILE = "README.md"
TAG = "ssah-audit"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def unit_map_sha256(unit_map: UnitMap) -> str:
    """sha256 of the unit map as saved (its tensors and summary files), independent of where it lies."""
    import tempfile

    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as scratch:
        unit_map.save(scratch)
        for name in (TENSORS_FILE, SUMMARY_FILE):
            digest.update((Path(scratch) / name).read_bytes())
    return digest.hexdigest()


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value)  # a JSON scalar is a valid YAML scalar


def _front_matter(fields: dict[str, Any]) -> str:
    lines = ["---"]
    for key, value in fields.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"- {_yaml_scalar(item)}" for item in value)
        else:
            lines.append(f"{key}: {_yaml_scalar(value)}")
    return "\n".join(lines + ["---", ""])


def _json_block(value: Any) -> str:
    return "```json\n" + json.dumps(value, indent=2, default=str) + "\n```\n"


def write_model_card(
    directory: str | Path,
    *,
    source: str,
    kind: str,
    unit_map: UnitMap | None = None,
    masks: dict | None = None,
    data: dict | None = None,
    results: dict | None = None,
) -> Path:
    """Write ``directory/README.md`` for a model made from ``source`` (``kind``: ablated, finetuned ...)."""
    directory = Path(directory)
    hub_source = source.split("@", 1)[0]
    fields: dict[str, Any] = {"library_name": "transformers", "tags": [TAG, kind]}
    if _HUB_ID.match(hub_source) and not Path(hub_source).exists():
        fields["base_model"] = hub_source
    parts = [
        _front_matter(fields),
        f"# {kind} model from `{source}` (SSAH Audit)\n",
        f"Written by SSAH Audit from the source model `{source}`.\n",
    ]
    if unit_map is not None:
        summary = unit_map.summary()
        rows = [
            f"| {name} | {row['units']} | {row['heads']} | {row['neurons']} | {row['unit_fraction']:.4f} | "
            f"{row['param_fraction']:.4f} |"
            for name, row in summary["classes"].items()
        ]
        parts.append(
            "## Unit map\n\n"
            f"sha256 `{unit_map_sha256(unit_map)}`, audited on {json.dumps(unit_map.model)}.\n\n"
            "| class | units | heads | neurons | unit fraction | parameter fraction |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows)
            + "\n\nAudit data: "
            + json.dumps(
                {name: entry.get("sha256") for name, entry in unit_map.data.items() if isinstance(entry, dict)}
            )
            + "\n"
        )
    for title, value in (("Masks (removed, frozen, trained)", masks), ("Data", data), ("Results", results)):
        if value:
            parts.append(f"## {title}\n\n" + _json_block(value))
    parts.append("## Versions\n\n" + _json_block(library_versions()))
    path = directory / CARD_FILE
    path.write_text("\n".join(parts))
    return path
