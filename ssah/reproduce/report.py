"""results.json, results.md and the printed table of an `ssah reproduce` run."""

from __future__ import annotations

import json
from pathlib import Path

from ssah_engine.classes import CLASSES

# The paper's numbers on Llama-2-7B-Chat (arXiv 2410.10862; docs/reproduce.md cites the tables), for the
# rows that have a counterpart. Keyword ASR on AdvBench; utility = mean of six zero-shot tasks.
PAPER = {
    "aligned_full": "ASR 10.5 % (mean of 2 conditions, no_inst), utility 58.3 (as released)",
    "aligned_budget": "no ASR given; GSM8K 13.4 vs 8.8 full SFT (LLaMA-7B)",
    "aligned_lora_ru": "not measured (the paper's future work)",
    "minus_SCU": "ASR 51.5 % (2 conditions; 66 % with the GCG column), utility 56.9",
    "minus_UCU": "ASR 35.5 % (2 conditions), utility 42.7 (perplexity 6.49 -> 180)",
    "minus_RU": "ASR 12.5 % (2 conditions; 14.6 % with GCG), utility 55.5",
    "downstream_full": "ASR 0.19 -> 11.92 % (Dolly)",
    "downstream_freeze_i": "ASR 3.65 % (Dolly)",
    "downstream_freeze_ii": "ASR 2.88 % (Dolly)",
}
HEADER = [
    "stage",
    "model",
    "ASR",
    "ASR sys",
    "ASR no-sys",
    "over-refusal",
    "refuses harmful",
    "refuses harmless",
    "perplexity",
    "change: ASR (pt) / ppl",
    "paper (Llama-2-7B-Chat)",
]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _signed(value, scale: float = 1.0, unit: str = "") -> str:
    return f"{scale * value:+.1f}{unit}"


def _change(row: dict, reference: dict, name: str) -> str:
    """Percentage-point ASR and perplexity changes against the reference row."""
    return (
        f"{_signed(row['asr'] - reference['asr'], 100)} / "
        f"{_signed(row['perplexity'] - reference['perplexity'])} vs {name}"
    )


def table_rows(results: dict) -> list[list[str]]:
    base = results["baseline"]
    aligned = results["alignment"]["full"] if results["alignment"] else base
    rows = []

    def add(stage, label, row, change="", paper=""):
        rows.append(
            [
                stage,
                label,
                _pct(row["asr"]),
                _pct(row["asr_system"]),
                _pct(row["asr_no_system"]),
                _pct(row["over_refusal"]),
                _pct(row["refusal_opening_harmful"]),
                _pct(row["refusal_opening_harmless"]),
                f"{row['perplexity']:.2f}",
                change,
                paper,
            ]
        )

    add("1 baseline", "pre-trained (as shipped)", base)
    budget_share = results["plan"]["budget"]
    for arm, label in (
        ("full", "aligned: full SFT"),
        ("budget", f"aligned: RU only ({100 * budget_share:.0f} %)"),
        ("lora_ru", f"aligned: LoRA-RU (rank {results['plan'].get('lora_rank')}, RU {100 * budget_share:.0f} %)"),
    ):
        if arm not in results["alignment"]:  # aligned as shipped: no stage 2
            continue
        entry = results["alignment"][arm]
        add("2 alignment", label, entry, _change(entry, base, "base"), PAPER[f"aligned_{arm}"])
    for name in ("SCU", "UCU", "RU") if "ablation" in results else ():
        entry = results["ablation"][f"minus_{name}"]
        add(
            "4 ablation",
            f"aligned minus {name} ({100 * entry['unit_fraction']:.1f} % of units)",
            entry,
            _change(entry, aligned, "aligned"),
            PAPER[f"minus_{name}"],
        )
    for arm, label in (
        ("full", "fine-tuned: full"),
        ("freeze_i", "fine-tuned: freeze (i)"),
        ("freeze_ii", "fine-tuned: freeze (ii)"),
    ):
        if arm not in results.get("downstream", {}):
            continue
        entry = results["downstream"][arm]
        add(
            "5 downstream",
            f"{label}, {100 * entry['frozen_unit_fraction']:.1f} % units frozen",
            entry,
            _change(entry, aligned, "aligned"),
            PAPER[f"downstream_{arm}"],
        )
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def text_table(header: list[str], rows: list[list[str]]) -> str:
    cells = [header] + rows
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    render = lambda row: "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
    return "\n".join([render(header), "  ".join("-" * width for width in widths)] + [render(row) for row in rows])


TABLE1_HEADER = [
    "format",
    "compensation",
    "ablation",
    "units (heads/neurons)",
    "ASR",
    "ASR sys / no-sys",
    "refusal openings, harmful [95 % CI]",
    "change vs dense [95 % CI]",
    "over-refusal",
    "perplexity",
]


def _ci(entry: dict | None) -> str:
    if not entry:
        return "-"
    return f"{_pct(entry['rate'])} [{_pct(entry['ci95'][0])}, {_pct(entry['ci95'][1])}]"


def _range(row: dict, name: str, formatter) -> str:
    text = formatter(row[name]) if row.get(name) is not None else "-"
    if row.get(f"{name}_range"):
        low, high = row[f"{name}_range"]
        text += f" ({formatter(low)}..{formatter(high)})"
    return text


def table1_rows(ablation: dict) -> list[list[str]]:
    """One row per format x compensation x arm; a random control shows its seeds' mean (and range)."""
    rows = []
    for row in ablation.get("table1", []):
        by_condition = row["asr_by_condition"]
        openings = row["intervals"]["refusal_openings_harmful"]
        change = (row.get("paired_vs_dense") or {}).get("refusal_openings_harmful", {})
        change_text = (
            ", ".join(
                f"{c}: {100 * d['difference']:+.0f} [{100 * d['ci95'][0]:+.0f}, {100 * d['ci95'][1]:+.0f}]"
                for c, d in change.items()
            )
            or "-"
        )
        units = f"{row['units']} ({row['heads']}/{row['neurons']})" if "units" in row else "-"
        arm = row["arm"] + (f", seeds {','.join(map(str, row['seeds']))}" if row.get("seeds") else "")
        rows.append(
            [
                row["prompt_format"],
                row["compensation"] or "-",
                arm,
                units,
                _range(row, "asr", _pct),
                " / ".join(_pct(by_condition.get(c)) for c in ("system", "no_system") if c in by_condition),
                "; ".join(f"{c}: {_ci(v)}" for c, v in openings.items()),
                change_text,
                _range(row, "over_refusal", _pct),
                _range(row, "perplexity", lambda v: f"{v:.2f}"),
            ]
        )
    return rows


def audit_section(audit: dict) -> str:
    classes = audit["classes"]
    lines = [
        markdown_table(
            ["class", "heads", "neurons", "% of units", "% of parameters"],
            [
                [
                    name,
                    str(classes[name]["heads"]),
                    str(classes[name]["neurons"]),
                    _pct(classes[name]["unit_fraction"]),
                    _pct(classes[name]["param_fraction"]),
                ]
                for name in CLASSES
            ],
        )
    ]
    thirds = audit["scu_thirds"]
    lines.append(
        f"\nSCU by depth: early {_pct(thirds['early'])}, middle {_pct(thirds['middle'])}, "
        f"late {_pct(thirds['late'])} of SCU units; most in layer {audit['scu_peak_layer']}.\n"
    )
    lines.append(
        markdown_table(
            ["layer", *CLASSES, "SCU heads"],
            [
                [str(row["layer"]), *(str(row[name]) for name in CLASSES), str(row["SCU_heads"])]
                for row in audit["layers"]
            ],
        )
    )
    return "\n".join(lines)


def transfer_section(downstream: dict) -> str:
    rows = []
    for arm, entry in downstream.items():
        transfer = entry["role_transfer"]
        rows.append(
            [
                arm,
                *(_pct(transfer["scu_to"][name]) for name in CLASSES),
                _pct(transfer["before"]["RU"]) + " -> " + _pct(transfer["after"]["RU"]),
                _pct(transfer["unchanged_fraction"]),
            ]
        )
    return markdown_table(["fine-tune", *(f"SCU -> {name}" for name in CLASSES), "RU share", "units unchanged"], rows)


def timing_section(results: dict) -> str:
    rows = [
        [name, f"{value['seconds']:.0f} s" + (" (earlier run)" if value["reused"] else "")]
        for name, value in results["stages"].items()
    ]
    return markdown_table(["stage", "wall time"], rows)


def lora_section(alignment: dict) -> str:
    """LoRA-RU against full-rank RU-only training (same data, RU and steps); empty when the arm is off."""
    if "lora_ru" not in alignment or "budget" not in alignment:
        return ""
    lora, budget = alignment["lora_ru"], alignment["budget"]
    rows = [
        [
            name,
            f"{entry['steps']}",
            f"{100 * entry['trainable_fraction']:.3f} %",
            f"{entry['loss_first']:.3f} -> {entry['loss_last']:.3f}",
            _pct(entry["asr"]),
            _pct(entry["over_refusal"]),
            _pct(entry["refusal_opening_harmful"]),
            f"{entry['perplexity']:.2f}",
            f"{entry['train_seconds']:.0f}s",
        ]
        for name, entry in (("RU only, full rank", budget), (f"LoRA-RU, rank {lora['lora']['rank']}", lora))
    ]
    header = [
        "alignment arm",
        "steps",
        "trained",
        "loss",
        "ASR",
        "over-refusal",
        "refuses harmful",
        "perplexity",
        "time",
    ]
    return (
        "\n## Safety-aware LoRA against full-rank RU-only training\n\n"
        + markdown_table(header, rows)
        + "\n\nSame data, redundant units and steps; trained: entries that may change (the adapter's for LoRA, "
        "whose merged update is zero outside RU's rows and columns).\n"
    )


def write_report(results: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    machine = results["machine"]
    text = [
        f"# ssah reproduce: {results['plan']['model']} ({results['plan']['preset']} preset)\n",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine['cpu_count']} CPUs, device {machine['device']}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + f", torch {machine['torch']}, transformers {machine['transformers']}, {machine['torch_threads']} threads  ",
        (
            f"Wall time: {results['stage_seconds_total'] / 60:.1f} min (sum of the stages); protocol {results['protocol']['hash'][:16]}; "
            f"plan {results['plan_hash'][:16]}\n"
        ),
        "## Results\n",
        markdown_table(HEADER, table_rows(results)),
        (
            "\nASR: keyword attack success (ssah-31 list, at least 20 words), mean of with/without the safety "
            "system prompt; over-refusal: ssah-31 refusal strings on harmless prompts; refuses harmful / harmless: "
            'responses that open with one of the protocol\'s refusal openings ("I can\'t", "Sorry", ...), both '
            'conditions; perplexity: benign text. Neither keyword list contains "I can\'t help", so a model that '
            "refuses that way counts as attacked and as not over-refusing: read the two opening columns too. "
            "Paper: Llama-2-7B-Chat, AdvBench, 256 tokens; not the same model, data or scale.\n"
        ),
        *filter(None, [lora_section(results["alignment"])]),  # only with the opt-in arm
        "## Table 1: ablations by prompt format and compensation, with matched random controls\n",
        markdown_table(TABLE1_HEADER, table1_rows(results.get("ablation", {}))),
        (
            "\nRefusal openings: share of harmful prompts whose response opens with a refusal opening, per condition, "
            "with Wilson 95 % intervals; change vs dense: percentage points, paired bootstrap 95 % interval over the "
            "same prompts (a random control: its first seed). A random control removes as many heads and neurons "
            "as the class, drawn from outside it, with the same compensation; its values are the mean over seeds "
            "(range in brackets).\n"
        ),
        "## Audit of the aligned model\n",
        audit_section(results["audit"]) if "audit" in results else "(not run)",
        "\n## Role transfer during downstream fine-tuning (aligned model's SCU, by class after)\n",
        transfer_section(results["downstream"]) if "downstream" in results else "(not run)",
        "\n## Models\n",
        "\n".join(f"- `{name}`: `{path}`" for name, path in results["models"].items()),
        "\n## Stage times\n",
        timing_section(results),
        "",
    ]
    (out / "results.md").write_text("\n".join(text))


def printed_summary(results: dict) -> str:
    audit = results.get("audit", {}).get("classes")
    classes = (
        ", ".join(f"{name} {100 * audit[name]['unit_fraction']:.2f} %" for name in CLASSES) if audit else "not run"
    )
    return "\n".join(
        [
            text_table(HEADER, table_rows(results)),
            "",
            f"audit of the aligned model: {classes}",
            (
                f"wall time {results['wall_seconds'] / 60:.1f} min (stages {results['stage_seconds_total'] / 60:.1f} min, "
                "earlier runs included); results in results.json and results.md"
            ),
        ]
    )
