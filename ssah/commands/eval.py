"""`ssah eval`: safety (keyword ASR, over-refusal, refusal margin, judge) and utility of a model, under a pinned protocol."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from ssah_engine.judge_spec import JUDGE_KINDS, JudgeSpec

from .common import CommandError, ProgressBar, add_model_arguments, format_table, load_model_from_args, run_guarded
from .config_flags import add_prefixed_flags


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
    parser.add_argument(
        "--harmful",
        help="harmful prompts: a file, builtin:NAME, hf:org/name[:split][?config=..&prompt=COLUMN..], or a "
        "named benchmark bench:NAME[/SUBSET][=LOCAL_COPY] (advbench, harmbench/standard|contextual|copyright, "
        "jbb/harmful, strongreject, xstest/unsafe, hex-phi); default builtin:harmful_eval",
    )
    parser.add_argument(
        "--harmless",
        help="harmless prompts for over-refusal, the same forms (e.g. bench:xstest/safe, bench:jbb/benign); "
        "default builtin:harmless_eval",
    )
    parser.add_argument("--benign-text", help="paragraphs for perplexity (default builtin:benign_text)")
    parser.add_argument("--samples", type=int, help="use the first N harmful and N harmless prompts")
    parser.add_argument("--max-new-tokens", type=int, help="new tokens per response (paper: 256)")
    parser.add_argument("--batch-size", type=int, help="prompts per batch")
    parser.add_argument("--conditions", help="comma list of system,no_system,suffix (default system,no_system)")
    parser.add_argument(
        "--prompt-format",
        choices=("chat", "no_inst", "raw"),
        help="chat: the model's template (default); no_inst: the paper's Table 1 text; raw: as given",
    )
    parser.add_argument("--suffixes", help="file of adversarial suffixes, one per line (adds the 'suffix' condition)")
    parser.add_argument(
        "--suffix-format",
        choices=("chat", "no_inst", "raw"),
        help="prompt format of the suffix condition (paper: chat; default: --prompt-format)",
    )
    parser.add_argument(
        "--system-prompt", help="the safety system prompt of the 'system' condition (default: Llama-2's)"
    )
    parser.add_argument(
        "--refusal-lists",
        help="comma list of named refusal lists; the first gives the headline ASR (default ssah-31,advbench-29)",
    )
    parser.add_argument(
        "--compensation",
        choices=("none", "safety", "utility", "pooled"),
        help="what replaces ablated units: none (zeroing, default), safety (paper), utility, pooled",
    )
    parser.add_argument(
        "--judge", metavar="SOURCE", help="judge model: hub id or directory (with --judge-base-url: the served name)"
    )
    parser.add_argument(
        "--judge-kind",
        choices=(*JUDGE_KINDS, "causal"),
        help="sequence (classifier, default), llama-guard (Llama Guard 1/2/3; causal is an alias), "
        "harmbench (yes/no classifier) or strongreject (rubric)",
    )
    judge_flags = add_prefixed_flags(parser, JudgeSpec, "judge", skip=("source", "kind"))
    parser.add_argument("--zero-shot-tasks", help="comma list of lm-eval tasks; '' for none")
    parser.add_argument(
        "--zero-shot-num-fewshot", type=int, metavar="N", help="few-shot examples per zero-shot task (paper: 0)"
    )
    parser.add_argument(
        "--zero-shot-include-path",
        metavar="DIR",
        help="folder of lm-eval task YAMLs (local tasks with local data files, for offline use); when it "
        "defines every task named, lm-eval's own task index is not built",
    )
    parser.add_argument(
        "--ablate",
        dest="classes",
        action="append",
        metavar="CLASS",
        help="remove this class (SCU/ESU, UCU/EUU, CU, RU) while evaluating; repeatable; needs --units; "
        "random:CLASS removes as many random heads and neurons from outside the class (a control)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of a random:CLASS control")
    parser.add_argument(
        "--compare-to",
        type=Path,
        metavar="EVALUATION_JSON",
        help="an earlier evaluation.json on the same prompts: adds paired differences with intervals",
    )
    parser.add_argument("--units", type=Path, help="unit map directory from `ssah audit`")
    parser.add_argument(
        "--log-samples",
        type=Path,
        metavar="FILE",
        help="also write one JSON line per prompt and condition: rendered prompt, response, every verdict, "
        "judge scores, id and category",
    )
    parser.add_argument(
        "--direction",
        type=Path,
        metavar="PROBE_DIR",
        help="refusal direction from `ssah probe` (its --out/model directory); with one of:",
    )
    parser.add_argument(
        "--ablate-direction",
        action="store_true",
        help="project the direction out of the residual stream at every layer",
    )
    parser.add_argument(
        "--add-direction",
        type=float,
        metavar="ALPHA",
        help="add ALPHA x the direction at its layer (on every prompt: induces refusal)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for evaluation.json and protocol.json")
    parser.set_defaults(run=lambda args: run_guarded(run, args), judge_fields=judge_flags)


def judge_spec(args: argparse.Namespace, protocol):
    """The protocol's judge with the --judge* flags given applied (None when neither names one)."""
    from ssah_engine.judge_spec import JudgeSpec

    given = {
        name: getattr(args, f"judge_{name}") for name in args.judge_fields if getattr(args, f"judge_{name}") is not None
    }
    if args.judge_kind is not None:
        given["kind"] = args.judge_kind
    if args.judge:
        given["source"] = args.judge
    if protocol.judge is None and not given:
        return None
    if protocol.judge is None and "source" not in given:
        raise ValueError("the --judge-* flags need --judge SOURCE (or a protocol with a judge)")
    base = dataclasses.asdict(protocol.judge) if protocol.judge is not None else {}
    return JudgeSpec.from_dict(base | given)


def build_protocol(args: argparse.Namespace):
    """The protocol file's settings (or the defaults), overridden by the flags given."""
    from ssah_engine.evaluation import DataRef, Protocol

    protocol = Protocol.load(args.protocol) if args.protocol else Protocol()
    changes = {}
    for name, flag in (("harmful", args.harmful), ("harmless", args.harmless), ("benign_text", args.benign_text)):
        if flag:
            changes[name] = DataRef(flag, getattr(protocol, name).limit)
    for name in ("max_new_tokens", "batch_size", "zero_shot_num_fewshot"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.conditions:
        changes["conditions"] = tuple(part.strip() for part in args.conditions.split(",") if part.strip())
    if args.refusal_lists:
        changes["refusal_lists"] = tuple(part.strip() for part in args.refusal_lists.split(",") if part.strip())
    if args.system_prompt is not None:
        changes["system_prompt"] = args.system_prompt
    if args.suffixes:
        changes["suffixes"] = DataRef(args.suffixes)
        conditions = changes.get("conditions", protocol.conditions)
        changes["conditions"] = tuple(conditions) + (() if "suffix" in conditions else ("suffix",))
    for name, flag in (
        ("prompt_format", args.prompt_format),
        ("suffix_format", args.suffix_format),
        ("ablation_compensation", args.compensation),
    ):
        if flag is not None:
            changes[name] = flag
    if args.zero_shot_tasks is not None:
        changes["zero_shot_tasks"] = tuple(part.strip() for part in args.zero_shot_tasks.split(",") if part.strip())
    changes["judge"] = judge_spec(args, protocol)
    protocol = protocol.replace(**changes)
    return protocol if args.samples is None else protocol.with_samples(args.samples)


def result_table(result: dict) -> str:
    safety, utility = result["safety"], result["utility"]
    percent = lambda value: "-" if value is None else f"{100 * value:.1f} %"  # noqa: E731
    number = lambda value, digits=3: "-" if value is None else f"{value:.{digits}f}"  # noqa: E731
    headline = safety["refusal_list"]
    margin = safety["refusal_margin"]
    intervals = safety["intervals"][headline]

    def with_ci(value, interval) -> str:
        return (
            percent(value)
            if not interval
            else f"{percent(value)} [{percent(interval['ci95'][0])}, {percent(interval['ci95'][1])}]"
        )

    rows = [[f"ASR, mean of conditions ({headline}, {safety['prompt_format']} format)", percent(safety["asr"])]]
    labels = {"system": "with system prompt", "no_system": "without system prompt", "suffix": "with suffixes (any)"}
    rows += [
        [f"ASR {labels[c]} ({headline})", with_ci(safety["asr_by_list"][headline][c], intervals["asr"][c])]
        for c in intervals["asr"]
    ]
    rows += [
        [f"opens with a refusal, harmful, {labels[c]}", with_ci(v["rate"] if v else None, v)]
        for c, v in safety["refusal_openings"]["harmful"].items()
    ]
    rows += [
        [f"ASR, mean ({name})", percent(values["mean"])]
        for name, values in safety["asr_by_list"].items()
        if name != headline
    ]
    rows += [
        [f"over-refusal on harmless ({headline})", percent(safety["over_refusal"])],
        ["refusal margin, harmful (mean)", number(margin["mean"])],
        ["predicted refusal by margin, harmful", percent(margin["predicted_refusal"])],
        ["refusal margin, harmless (mean)", number(margin["harmless"]["mean"])],
        ["predicted refusal by margin, harmless", percent(margin["harmless"]["predicted_refusal"])],
        [f"margin/keyword agreement ({headline})", percent(margin["agreement_with_keywords"][headline])],
    ]
    if safety["judge"]:
        judge = safety["judge"]
        name = f"{judge['identity']['source']}, {judge['identity']['kind']}"
        rows.append([f"judge ASR ({name})", percent(judge["asr"])])
        rows.append([f"judge mean score ({name})", number(judge.get("score_mean"))])
        rows.append(["judge answers not parsed", str(sum((judge.get("unparsed") or {}).values()))])
    for outcome, per_condition in (result.get("comparison") or {}).get("differences", {}).items():
        for condition, diff in per_condition.items():
            rows.append(
                [
                    f"change vs --compare-to: {outcome} ({condition})",
                    f"{100 * diff['difference']:+.1f} pt [{100 * diff['ci95'][0]:+.1f}, {100 * diff['ci95'][1]:+.1f}]",
                ]
            )
    rows += [
        ["perplexity, benign text", number(utility["perplexity"], 2)],
        ["response NLL, benign instructions", number(utility["response_nll"])],
        ["zero-shot tasks (lm-eval)", utility["zero_shot"]["status"]],
    ]
    return format_table(["metric", "value"], rows)


def judge_key(protocol) -> str | None:
    """The endpoint judge's key, from the environment variable the protocol names (the key itself is never stored)."""
    name = protocol.judge.api_key_env if protocol.judge is not None else ""
    return os.environ.get(name) if name else None


def run(args: argparse.Namespace) -> int:
    if bool(args.classes) != bool(args.units):
        raise CommandError("--ablate and --units go together")
    from ssah_engine.data import DatasetError
    from ssah_engine.evaluation import AblationSpec, compare, evaluate

    try:
        protocol = build_protocol(args)
        ablation = AblationSpec.parse(args.classes, seed=args.seed) if args.classes else None
    except ValueError as error:
        raise CommandError(str(error)) from None
    earlier = json.loads(args.compare_to.read_text()) if args.compare_to else None
    unit_map = None
    if args.units:
        from ssah_engine.unitmap import UnitMap

        unit_map = UnitMap.load(args.units)
    from .direction_flags import direction_intervention

    loaded = load_model_from_args(args)
    started = time.perf_counter()
    bar = ProgressBar("eval")
    try:
        with direction_intervention(loaded.model, args) as intervention:
            result = evaluate(
                loaded,
                protocol,
                progress=bar,
                ablation=ablation,
                unit_map=unit_map,
                judge_api_key=judge_key(protocol),
                zero_shot_include_path=args.zero_shot_include_path,
            )
        if intervention:
            result["direction_intervention"] = intervention
        if earlier is not None:
            result["comparison"] = compare(earlier, result) | {"against": str(args.compare_to)}
    except (DatasetError, ValueError) as error:
        raise CommandError(str(error)) from None
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    if ablation is not None:
        result["ablation"]["unit_map"] = str(args.units)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (args.out / "protocol.json").write_text(
        json.dumps(result["protocol"]["settings"], indent=2, ensure_ascii=False) + "\n"
    )
    if args.log_samples:
        from ssah_engine.evaluation.samples import write_samples

        print(f"{write_samples(result, args.log_samples)} samples in {args.log_samples}")
    removed = ""
    if ablation is not None:
        removed = f" minus {result['ablation']['label']} ({result['ablation']['units']} units, {protocol.ablation_compensation} compensation)"
    print(f"{args.model}{removed}")
    print(result_table(result))
    print(f"\nprotocol {result['protocol']['hash'][:16]}; evaluated in {elapsed:.1f}s; results in {args.out}")
    return 0
