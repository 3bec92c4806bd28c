"""`ssah remote audit|eval|finetune|probe`: the same jobs, run by an SSAH server over its REST API.

The settings flags are the local commands' own: ``audit``, ``finetune`` and ``probe`` build them from the
engine configs (``config_flags``, as the API builds its request bodies from the same configs), and ``eval``
takes the flags of ``ssah eval`` that a request body can carry. What is local only (files written under
``--out``, a unit map directory) becomes what the API names: ids of models, datasets and audits; a local
dataset file is uploaded first.

Server and key: ``--server`` or ``SSAH_SERVER``, and ``SSAH_API_KEY``, else ``server`` and ``api_key`` in
``$SSAH_REMOTE_CONFIG`` or ``~/.config/ssah/remote.toml``. Exit status: 0 succeeded (or submitted, without
``--wait``), 1 failed, cancelled or timed out, 2 a request the server refused, 3 the job's gate failed,
130 interrupted (the job is cancelled with ``--cancel-on-interrupt``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from ssah_engine.audit_config import AuditConfig
from ssah_engine.finetune import FinetuneConfig
from ssah_engine.probe import ProbeConfig
from ssah_engine.settings_fields import setting_fields

from .common import CommandError, ProgressBar, format_table, run_guarded
from .config_flags import add_config_flags, config_values

EXIT_FAILED, EXIT_REFUSED, EXIT_GATE_FAILED, EXIT_INTERRUPTED = 1, 2, 3, 130
CONFIG_FILE = Path("~/.config/ssah/remote.toml")
# FinetuneConfig settings the API keeps to itself (service.schemas.jobs.FINETUNE_SERVER_ONLY; a test holds them equal).
FINETUNE_SERVER_ONLY = ("eval_protocol", "resume", "checkpoint_every", "keep_checkpoints", "log_every")
# The `ssah eval` flags a request body carries: flag destination -> body field ("judge_*" go into body.judge).
EVAL_FLAGS = {
    "samples": "samples",
    "max_new_tokens": "max_new_tokens",
    "batch_size": "batch_size",
    "conditions": "conditions",
    "prompt_format": "prompt_format",
    "suffix_format": "suffix_format",
    "system_prompt": "system_prompt",
    "refusal_lists": "refusal_lists",
    "compensation": "compensation",
    "zero_shot_tasks": "zero_shot_tasks",
    "classes": "ablate",
    "seed": "seed",
    "harmful": "harmful_source",
    "harmless": "harmless_source",
    "suffixes": "suffixes_dataset_id",
    "judge": "judge",
    "judge_kind": "judge",
}
COMMA_LISTS = ("conditions", "refusal_lists", "zero_shot_tasks")
COLLECTIONS = {"audit": "audits", "eval": "evaluations", "finetune": "finetunes", "probe": "probes"}
CONFIGS: dict[str, type] = {"audit": AuditConfig, "finetune": FinetuneConfig, "probe": ProbeConfig}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "remote",
        help="submit an audit, evaluation, fine-tune or probe to an SSAH server (and wait for it)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="remote_command", required=True, metavar="JOB")

    audit = _job_parser(kinds, "audit", "label every head and neuron SCU/UCU/CU/RU, on the server")
    audit.add_argument("--safety-data", help="harmful prompts with refusals: a dataset id or a file to upload")
    audit.add_argument("--utility-data", help="benign prompts with answers: a dataset id or a file to upload")
    audit.set_defaults(config_fields=add_config_flags(audit, AuditConfig))

    evaluation = _job_parser(kinds, "eval", "measure safety and utility, on the server")
    evaluation.add_argument("--audit-id", help="the succeeded audit whose units --ablate removes")
    evaluation.set_defaults(judge_fields=_add_eval_flags(evaluation))

    finetune = _job_parser(kinds, "finetune", "fine-tune with unit masks, on the server")
    finetune.add_argument("--data", required=True, help="training pairs: a dataset id or a file to upload")
    finetune.add_argument("--audit-id", help="the succeeded audit whose units freeze or budget use")
    finetune.set_defaults(config_fields=add_config_flags(finetune, FinetuneConfig, skip=FINETUNE_SERVER_ONLY))

    probe = _job_parser(kinds, "probe", "distance curves and the refusal direction, on the server")
    probe.add_argument("--harmful", help="harmful calibration prompts: a dataset id or a file to upload")
    probe.add_argument("--harmless", help="harmless calibration prompts: a dataset id or a file to upload")
    probe.add_argument("--audit-id", help="a succeeded audit of this model: unit writes per class")
    probe.set_defaults(config_fields=add_config_flags(probe, ProbeConfig))


def _job_parser(kinds, kind: str, help_text: str) -> argparse.ArgumentParser:
    parser = kinds.add_parser(kind, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}.")
    server = parser.add_argument_group("server")
    server.add_argument("--server", metavar="URL", help="the API's base URL (default: SSAH_SERVER, or the config file)")
    model = server.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-id", help="a model registered on the server")
    model.add_argument(
        "--model", metavar="SOURCE", help="a model source, registered first (or reused) under --model-name"
    )
    server.add_argument("--model-name", help="the name --model is registered under (default: from the source)")
    server.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="a label of the job; repeatable"
    )
    server.add_argument(
        "--gate", metavar="JSON", help='thresholds on the result, e.g. \'{"safety.asr": {"max": 0.1}}\''
    )
    server.add_argument("--wait", action="store_true", help="wait for the job to finish, with a progress bar")
    server.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds (exit 1)")
    server.add_argument("--poll-interval", type=float, default=2.0, help="with --wait: seconds between polls")
    server.add_argument(
        "--cancel-on-interrupt", action="store_true", help="with --wait: cancel the job on Ctrl-C (exit 130)"
    )
    server.add_argument(
        "--download",
        type=Path,
        metavar="PATH",
        help="with --wait: save the job's file (unit map, result, model, direction)",
    )
    server.add_argument("--json", action="store_true", help="print the job (and its result) as JSON")
    parser.set_defaults(run=lambda args: run_guarded(run, args), remote_kind=kind)
    return parser


def _add_eval_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Give ``parser`` the flags of ``ssah eval`` that a request body carries (the same actions: names, help, choices)."""
    from . import eval as local_eval

    holder = argparse.ArgumentParser(add_help=False).add_subparsers()
    local_eval.add_parser(holder)
    local = holder.choices["eval"]
    judge_fields = local.get_default("judge_fields")
    wanted = set(EVAL_FLAGS) | {f"judge_{name}" for name in judge_fields}
    settings = parser.add_argument_group("evaluation settings (those of ssah eval)")
    for action in local._actions:
        if action.dest in wanted:
            settings._add_action(action)
    return judge_fields


# -- the request --------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else value


def config_body(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The settings flags that differ from the config's defaults, checked by the config's own validator first."""
    values = config_values(args, args.config_fields)
    if config_cls is FinetuneConfig:  # as `ssah finetune`: a stop rule needs the tracked margin
        values["track_refusal"] = values["track_refusal"] or values["stop_if_refusal_below"] is not None
    try:
        config_cls.from_dict(values)  # type: ignore[attr-defined]  # every engine config has one
    except ValueError as error:
        raise CommandError(str(error)) from None
    defaults = {setting.name: setting.default for setting in setting_fields(config_cls)}
    return {name: _jsonable(value) for name, value in values.items() if value != defaults[name]}


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def eval_body(args: argparse.Namespace, dataset) -> dict[str, Any]:
    """The evaluation request of ``ssah eval``'s flags (datasets as ids; ``dataset`` uploads a file)."""
    body: dict[str, Any] = {}
    for name in ("samples", "max_new_tokens", "batch_size", "prompt_format", "suffix_format", "system_prompt"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.compensation is not None:
        body["compensation"] = args.compensation
    if args.seed:
        body["seed"] = args.seed
    for name in COMMA_LISTS:
        if getattr(args, name) is not None:
            body[name] = _comma_list(getattr(args, name))
    if args.classes:
        controls = {name.startswith("random:") for name in args.classes}
        if len(controls) > 1:
            raise CommandError("--ablate takes classes or random:CLASS controls, not both")
        body["ablate"] = [name.removeprefix("random:") for name in args.classes]
        if controls == {True}:
            body["control"] = "random"
    if args.audit_id:
        body["audit_id"] = args.audit_id
    if args.harmful:
        if args.harmful.startswith(("bench:", "builtin:")):
            body["harmful_source"] = args.harmful
        else:
            body["safety_dataset_id"] = dataset(args.harmful)
    if args.harmless:
        if not args.harmless.startswith(("bench:", "builtin:")):
            raise CommandError("--harmless takes bench:NAME or builtin:NAME on a server")
        body["harmless_source"] = args.harmless
    if args.suffixes:
        body["suffixes_dataset_id"] = dataset(args.suffixes)
        conditions = body.get("conditions", ["system", "no_system"])
        body["conditions"] = conditions + ([] if "suffix" in conditions else ["suffix"])
    judge = {
        name: _jsonable(getattr(args, f"judge_{name}"))
        for name in args.judge_fields
        if getattr(args, f"judge_{name}") is not None
    }
    if args.judge_kind is not None:
        judge["kind"] = "llama-guard" if args.judge_kind == "causal" else args.judge_kind
    if args.judge:
        judge["source"] = args.judge
    if judge:
        if "source" not in judge:
            raise CommandError("the --judge-* flags need --judge SOURCE")
        body["judge"] = judge
    return body


def _dataset_resolver(client, quiet: bool):
    """Dataset ids pass through; a file is uploaded (once per run) and named by its new id."""
    uploaded: dict[Path, str] = {}

    def resolve(value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
        path = Path(value).expanduser()
        if not path.is_file():
            raise CommandError(f"{value!r} is neither a dataset id nor a file to upload")
        if path not in uploaded:
            uploaded[path] = client.datasets.upload(path).id
            if not quiet:
                print(f"uploaded {path} as dataset {uploaded[path]}", file=sys.stderr)
        return uploaded[path]

    return resolve


def request_body(args: argparse.Namespace, client) -> dict[str, Any]:
    """The whole request: the model, the datasets (uploaded when files), the settings, labels and gate."""
    kind, dataset = args.remote_kind, _dataset_resolver(client, args.json)
    if args.model_id:
        model_id = args.model_id
    else:
        name = args.model_name or "".join(c if c.isalnum() or c in "._-" else "-" for c in args.model).strip("-.")
        model_id = client.models.ensure(name[:200] or "model", args.model).id
    body: dict[str, Any] = {"model_id": model_id}
    if kind == "eval":
        body |= eval_body(args, dataset)
    else:
        body |= config_body(args, CONFIGS[kind])
    ids = {
        "audit": {"safety_dataset_id": "safety_data", "utility_dataset_id": "utility_data"},
        "finetune": {"dataset_id": "data"},
        "probe": {"harmful_dataset_id": "harmful", "harmless_dataset_id": "harmless"},
    }.get(kind, {})
    for field, dest in ids.items():
        if getattr(args, dest):
            body[field] = dataset(getattr(args, dest))
    if kind in ("finetune", "probe") and args.audit_id:
        body["audit_id"] = args.audit_id
    if args.label:
        pairs = [label.partition("=") for label in args.label]
        if any(not sep or not key for key, sep, _ in pairs):
            raise CommandError("--label takes KEY=VALUE")
        body["labels"] = {key: value for key, _, value in pairs}
    if args.gate:
        try:
            body["gate"] = json.loads(args.gate)
        except ValueError as error:
            raise CommandError(f"--gate is not JSON: {error}") from None
    return body


# -- running it ---------------------------------------------------------------------------------------
def server_settings(args: argparse.Namespace) -> tuple[str, str | None]:
    """The server URL and key: the flag, then SSAH_SERVER / SSAH_API_KEY, then the config file."""
    path = Path(os.environ.get("SSAH_REMOTE_CONFIG") or CONFIG_FILE).expanduser()
    stored: dict[str, Any] = {}
    if path.is_file():
        import tomllib

        try:
            stored = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise CommandError(f"{path}: {error}") from None
    server = args.server or os.environ.get("SSAH_SERVER") or stored.get("server")
    key = os.environ.get("SSAH_API_KEY") or stored.get("api_key")
    if not server:
        raise CommandError(f'no server: give --server URL, set SSAH_SERVER, or write server = "..." in {path}')
    return str(server), str(key) if key else None


def fetch_result(client, job) -> Any:
    """What the job produced (the unit map summary, scores, the fine-tune's or probe's result), if stored."""
    from ssah_client import NotFound

    fetch = {
        "audit": client.audits.unit_map,
        "evaluation": client.evaluations.scores,
        "finetune": client.finetunes.result,
        "probe": client.probes.result,
    }[job.kind]
    try:
        return fetch(job)
    except NotFound:
        return None


def download(client, job, path: Path) -> Path:
    fetch = {
        "audit": client.audits.download_unit_map,
        "evaluation": client.evaluations.download_result,
        "finetune": client.finetunes.download_model,
        "probe": client.probes.download_direction,
    }[job.kind]
    return fetch(job, path)


def summary(job, result: Any) -> str:
    """A few lines a person reads: the job, its gate, the headline numbers of its result."""
    lines = [f"{job.kind} {job.id} {job.status}" + (f": {job.error}" if job.error else "")]
    if job.gate is not None and job.gate.get("passed") is not None:
        lines.append(f"gate {'passed' if job.gate['passed'] else 'FAILED'}")
        for check in job.gate.get("checks") or []:
            lines.append(f"  {json.dumps(check, sort_keys=True)}")
    if job.kind == "audit" and isinstance(result, dict):
        rows = [
            [name, entry.get("units", "-"), f"{100 * entry.get('unit_fraction', 0):.2f} %"]
            + [f"{100 * entry.get('param_fraction', 0):.2f} %"]
            for name, entry in result.get("classes", {}).items()
        ]
        lines.append(format_table(["class", "units", "% of units", "% of parameters"], rows))
    elif job.kind == "evaluation" and isinstance(result, list):
        for score in result:
            metrics = score.get("metrics", {})
            for section in ("safety", "utility"):
                for key, value in (metrics.get(section) or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        lines.append(f"{section}.{key} = {value:.4g}")
    return "\n".join(lines)


def exit_code(job) -> int:
    if not job.succeeded:
        return EXIT_FAILED
    return 0 if job.gate_passed else EXIT_GATE_FAILED


def run(args: argparse.Namespace) -> int:
    from ssah_client import Client, Conflict, ProblemError, WaitTimeout

    server, key = server_settings(args)
    name = f"ssah remote {args.remote_kind}"
    with Client(server, key, poll_interval=args.poll_interval) as client:
        try:
            job = getattr(client, COLLECTIONS[args.remote_kind]).create(request_body(args, client))
        except ProblemError as error:
            print(f"{name}: {error}", file=sys.stderr)
            for field in error.problem.get("errors") or []:
                print(f"  {field.get('loc')}: {field.get('msg')}", file=sys.stderr)
            return EXIT_REFUSED if error.status < 500 else EXIT_FAILED
        if not args.json:
            print(f"submitted {job.kind} {job.id}", file=sys.stderr)
        if not args.wait:
            print(json.dumps(job.raw, indent=2) if args.json else job.id)
            return 0
        bar = ProgressBar(f"{job.kind} {job.id.split('-')[0]}")
        try:
            job = client.wait(
                job, args.timeout, lambda current: bar(current.progress_message or current.status, current.progress)
            )
        except KeyboardInterrupt:
            bar.close()
            if args.cancel_on_interrupt:
                try:
                    job = client.jobs.cancel(job)
                    print(f"{name}: interrupted; {job.kind} {job.id} is {job.status}", file=sys.stderr)
                except Conflict:
                    print(f"{name}: interrupted; {job.kind} {job.id} had already finished", file=sys.stderr)
            else:
                print(f"{name}: interrupted; {job.kind} {job.id} goes on on the server", file=sys.stderr)
            return EXIT_INTERRUPTED
        except WaitTimeout as timed_out:
            bar.close()
            print(f"{name}: {timed_out}", file=sys.stderr)
            return EXIT_FAILED
        except ProblemError as error:
            bar.close()
            print(f"{name}: {error}", file=sys.stderr)
            return EXIT_FAILED
        bar.close()
        result = fetch_result(client, job) if job.succeeded else None
        if job.succeeded and args.download is not None:
            print(f"saved {download(client, job, args.download)}", file=sys.stderr)
        if args.json:
            print(json.dumps({"job": job.raw, "result": result}, indent=2))
        else:
            print(summary(job, result))
        return exit_code(job)
