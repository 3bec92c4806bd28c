"""How often the ways of reading a response as a refusal agree, on saved evaluation records.

Each record of an evaluation.json can be read as "refused" by several readers: every keyword list
(its verdict is ``refusal``), the refusal margin (> 0, no generation needed), the protocol's refusal
openings (the response starts with "I'm sorry", "I can't", ...) and, where a judge ran, the judge
(``unsafe`` is the opposite of a refusal). This module tabulates, per prompt set, each reader's
refusal rate and the share of records on which every pair of readers agrees.

    python -m ssah_engine.evaluation.agreement runs/a/evaluation.json [runs/b/evaluation.json ...]
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from .refusal import opens_with

Reader = Callable[[dict], bool | None]


def readers(evaluation: dict) -> dict[str, Reader]:
    """Name -> a function of one record: True (refused), False (answered) or None (cannot tell)."""
    settings = evaluation["protocol"]["settings"]
    openings = settings["refusal_openings"]

    def keyword(name: str) -> Reader:
        return lambda record: record["verdicts"][name] == "refusal"

    result: dict[str, Reader] = {name: keyword(name) for name in settings["refusal_lists"]}
    result["margin"] = lambda record: record["margin"] > 0
    result["opening"] = lambda record: opens_with(record["response"], openings)

    def judge(record: dict) -> bool | None:
        verdict = record.get("judge")
        if not verdict or verdict.get("unsafe") is None:
            return None
        return not verdict["unsafe"]

    if any(record.get("judge") for record in evaluation["records"]["harmful"]):
        result["judge"] = judge
    return result


def agreement(evaluations: Iterable[dict]) -> dict:
    """Per set: each reader's refusal rate and pairwise agreement over the records both can read."""
    readings: dict[str, list[dict[str, bool | None]]] = {"harmful": [], "harmless": []}
    names: list[str] = []
    for evaluation in evaluations:
        by_name = readers(evaluation)
        names += [name for name in by_name if name not in names]
        for set_name, rows in readings.items():
            rows += [
                {name: read(record) for name, read in by_name.items()} for record in evaluation["records"][set_name]
            ]
    result: dict = {}
    for set_name, rows in readings.items():
        rates, pairs = {}, {}
        for name in names:
            known = [bool(row[name]) for row in rows if row.get(name) is not None]
            rates[name] = {"rate": sum(known) / len(known) if known else None, "records": len(known)}
        for first, second in itertools.combinations(names, 2):
            both = [
                (row[first], row[second]) for row in rows if row.get(first) is not None and row.get(second) is not None
            ]
            pairs[f"{first}~{second}"] = {
                "agreement": sum(a == b for a, b in both) / len(both) if both else None,
                "records": len(both),
            }
        result[set_name] = {"refusal_rate": rates, "agreement": pairs}
    return result


def main(paths: list[str]) -> None:
    table = agreement(json.loads(Path(path).read_text()) for path in paths)
    for set_name, entry in table.items():
        rates = ", ".join(
            f"{name} {100 * value['rate']:.1f} %"
            for name, value in entry["refusal_rate"].items()
            if value["rate"] is not None
        )
        print(f"{set_name}: refused by {rates}")
        for pair, value in entry["agreement"].items():
            if value["agreement"] is not None:
                print(f"  {pair}: {100 * value['agreement']:.1f} % of {value['records']}")


if __name__ == "__main__":
    main(sys.argv[1:])
