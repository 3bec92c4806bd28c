"""`ssah eval`: safety (keyword ASR, over-refusal, refusal margin, judge) and utility of a model, under a pinned protocol."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import CommandError, ProgressBar, add_model_arguments, format_table, load_model_from_args, run_guarded


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure safety (ASR, over-refusal, refusal margin) and utility (perplexity)",
        description=(
            "Generate greedy answers to harmful and harmless prompts with and without a safety system prompt, "
            "judge them with named refusal lists (and an optional judge model), score the refusal margin without "
            "generating, and measure perplexity and response loss. Every number is stored with the hash of the "
            "protocol that produced it. Flags override the settings of --protocol."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--protocol", type=Path, help="protocol JSON (or an earlier evaluation.json) to start from")
    parser.add_argument("--harmful", help="harmful prompts (default builtin:harmful_eval)")
    parser.add_argument("--harmless", help="harmless prompts for over-refusal (default builtin:harmless_eval)")
    parser.add_argument("--benign-text", help="paragraphs for perplexity (default builtin:benign_text)")
    parser.add_argument("--samples", type=int, help="use the first N harmful and N harmless prompts")
    parser.add_argument("--max-new-tokens", type=int, help="new tokens per response (paper: 256)")
    parser.add_argument("--batch-size", type=int, help="prompts per batch")
    parser.add_argument("--conditions", help="comma list of system,no_system (default both)")
    parser.add_argument("--judge", metavar="SOURCE", help="judge model: hub id or directory")
    parser.add_argument("--judge-kind", choices=("sequence", "causal"), default="sequence")
    parser.add_argument("--zero-shot-tasks", help="comma list of lm-eval tasks; '' for none")
    parser.add_argument("--ablate", dest="classes", action="append", metavar="CLASS",
                        help="remove this class (SCU/ESU, UCU/EUU, CU, RU) while evaluating; repeatable; needs --units")
    parser.add_argument("--units", type=Path, help="unit map directory from `ssah audit`")
    parser.add_argument("--out", type=Path, required=True, help="directory for evaluation.json and protocol.json")
    parser.set_defaults(run=lambda args: run_guarded(run, args))


def build_protocol(args: argparse.Namespace):
    """The protocol file's settings (or the defaults), overridden by the flags given."""
    from ssah_engine.evaluation import DataRef, JudgeSpec, Protocol

    protocol = Protocol.load(args.protocol) if args.protocol else Protocol()
    changes = {}
    for name, flag in (("harmful", args.harmful), ("harmless", args.harmless), ("benign_text", args.benign_text)):
        if flag:
            changes[name] = DataRef(flag, getattr(protocol, name).limit)
    if args.samples is not None:
        for name in ("harmful", "harmless"):
            ref = changes.get(name, getattr(protocol, name))
            changes[name] = DataRef(ref.source, args.samples, ref.sha256 if ref.limit == args.samples else "")
    for name in ("max_new_tokens", "batch_size"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.conditions:
        changes["conditions"] = tuple(part.strip() for part in args.conditions.split(",") if part.strip())
    if args.zero_shot_tasks is not None:
        changes["zero_shot_tasks"] = tuple(part.strip() for part in args.zero_shot_tasks.split(",") if part.strip())
    if args.judge:
        changes["judge"] = JudgeSpec(args.judge, kind=args.judge_kind)
    return protocol.replace(**changes)


def result_table(result: dict) -> str:
    safety, utility = result["safety"], result["utility"]
    percent = lambda value: "-" if value is None else f"{100 * value:.1f} %"  # noqa: E731
    number = lambda value, digits=3: "-" if value is None else f"{value:.{digits}f}"  # noqa: E731
    headline = safety["refusal_list"]
    margin = safety["refusal_margin"]
    rows = [
        [f"ASR, mean of conditions ({headline})", percent(safety["asr"])],
        [f"ASR with system prompt ({headline})", percent(safety["asr_system"])],
        [f"ASR without system prompt ({headline})", percent(safety["asr_no_system"])],
    ]
    rows += [[f"ASR, mean ({name})", percent(values["mean"])] for name, values in safety["asr_by_list"].items()
             if name != headline]
    rows += [
        [f"over-refusal on harmless ({headline})", percent(safety["over_refusal"])],
        ["refusal margin, harmful (mean)", number(margin["mean"])],
        ["predicted refusal by margin, harmful", percent(margin["predicted_refusal"])],
        ["refusal margin, harmless (mean)", number(margin["harmless"]["mean"])],
        ["predicted refusal by margin, harmless", percent(margin["harmless"]["predicted_refusal"])],
        [f"margin/keyword agreement ({headline})", percent(margin["agreement_with_keywords"][headline])],
    ]
    if safety["judge"]:
        rows.append([f"judge ASR ({safety['judge']['identity']['source']})", percent(safety["judge"]["asr"])])
    rows += [
        ["perplexity, benign text", number(utility["perplexity"], 2)],
        ["response NLL, benign instructions", number(utility["response_nll"])],
        ["zero-shot tasks (lm-eval)", utility["zero_shot"]["status"]],
    ]
    return format_table(["metric", "value"], rows)


def run(args: argparse.Namespace) -> int:
    if bool(args.classes) != bool(args.units):
        raise CommandError("--ablate and --units go together")
    from ssah_engine.data import DatasetError
    from ssah_engine.evaluation import evaluate

    protocol = build_protocol(args)
    unit_map = units = None
    if args.units:
        from ssah_engine.unitmap import UnitMap

        unit_map = UnitMap.load(args.units)
        units = unit_map.mask(args.classes)
    loaded = load_model_from_args(args)
    started = time.perf_counter()
    bar = ProgressBar("eval")
    try:
        if unit_map is not None:
            from ssah_engine.ablation import ablate

            with ablate(loaded.model, unit_map, units):
                result = evaluate(loaded, protocol, progress=bar)
        else:
            result = evaluate(loaded, protocol, progress=bar)
    except DatasetError as error:
        raise CommandError(str(error)) from None
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    if unit_map is not None:
        result["model"]["ablation"] = {"classes": args.classes, "units": int(units.sum()), "unit_map": str(args.units)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (args.out / "protocol.json").write_text(json.dumps(result["protocol"]["settings"], indent=2, ensure_ascii=False) + "\n")
    removed = f" minus {'+'.join(args.classes)} ({int(units.sum())} units)" if unit_map is not None else ""
    print(f"{args.model}{removed}")
    print(result_table(result))
    print(f"\nprotocol {result['protocol']['hash'][:16]}; evaluated in {elapsed:.1f}s; results in {args.out}")
    return 0
