"""One contract: the same settings given to `ssah audit|finetune|probe` and to POST /v1/audits|finetunes|probes reach the
engine as equal configs, and every engine setting the server does not keep to itself is accepted by both."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.schemas.integrations import INTEGRATION_FIELDS
from service.schemas.jobs import FINETUNE_SERVER_ONLY, AuditCreate, FinetuneCreate, ProbeCreate
from ssah.cli import build_parser
from ssah.commands import audit as audit_command
from ssah.commands import probe as probe_command
from ssah.commands.finetune import config_from_args
from ssah_engine.audit_config import AuditConfig
from ssah_engine.finetune import FinetuneConfig
from ssah_engine.placement import Placement
from ssah_engine.probe import ProbeConfig
from ssah_engine.settings_fields import setting_fields
from tests.service.conftest import Tenant_, succeeded_audit
from worker import job_configs

# Every value differs from its default, so a setting dropped anywhere on the way shows.
FREEZE = {
    "mode": "freeze",
    "setting": "ii",
    "cu_top": 0.05,
    "cu_top_of": "cu",
    "budget": 0.3,
    "budget_samples": 64,
    "freeze_layers": "0-1",
    "freeze_rule": "rows",
    "paper_schedule": True,
    "train_embeddings": False,
    "train_norms": True,
    "train_lm_head": False,
    "mix_data": "builtin:align_refusal",
    "mix_pairs": 5,
    "anchor": 3.0,
    "epochs": 2,
    "max_steps": 7,
    "batch_size": 2,
    "grad_accum": 3,
    "lr": 1e-4,
    "weight_decay": 0.01,
    "betas": [0.8, 0.99],
    "warmup_ratio": 0.1,
    "schedule": "linear",
    "max_grad_norm": None,
    "packed_optimizer": False,
    "max_length": 256,
    "system_prompt": "Be careful.",
    "seed": 3,
    "bf16": False,
    "gradient_checkpointing": True,
    "track_refusal": True,
    "track_every": 2,
    "track_prompts": 4,
    "track_harmful": "builtin:harmful_eval",
    "track_harmless": "builtin:harmless_eval",
    "stop_if_refusal_below": -1.0,
    "evaluate": True,
    "reaudit": True,
}
CLASSES = {"mode": "freeze", "freeze_classes": ["SCU", "UCU"], "lr": 3e-5, "max_steps": 3}
FULL = {"mode": "full", "epochs": 3}
PRESET = {"preset": "keep-refusals", "lr": 1e-4}
LORA = {"mode": "budget", "lora_rank": 8, "lora_alpha": 4, "max_steps": 3}


def cli_flags(values: dict) -> list[str]:
    """The command line a researcher types for ``values`` (names with dashes, --x/--no-x, comma lists)."""
    flags = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif isinstance(value, list):
            flags += [flag, ",".join(map(str, value))]
        elif isinstance(value, dict):  # cuts
            flags += [flag, ",".join(str(value[key]) for key in ("ru", "scu", "ucu"))]
        else:
            flags += [flag, "none" if value is None else str(value)]
    return flags


# Labels, gate and callback: what a pipeline attaches to any job, kept out of the engine's parameters.
PIPELINE = set(INTEGRATION_FIELDS)


def test_every_engine_setting_is_a_flag_and_a_request_field():
    names = {setting.name for setting in setting_fields(FinetuneConfig)}
    assert set(FinetuneCreate.model_fields) == (names - set(FINETUNE_SERVER_ONLY)) | PIPELINE | {
        "model_id",
        "dataset_id",
        "audit_id",
    }
    args = build_parser().parse_args(["finetune", "--model", "m", "--data", "d", "--out", "o"])
    assert set(args.config_fields) == names
    assert (
        set(FREEZE) | set(FINETUNE_SERVER_ONLY) | set(CLASSES) | set(PRESET) | set(LORA) == names
    )  # every field is covered


@pytest.mark.parametrize(
    "values", [FREEZE, CLASSES, FULL, PRESET, LORA], ids=["setting", "classes", "full", "preset", "lora"]
)
def test_cli_and_api_give_the_engine_the_same_config(
    values, client: TestClient, db: Session, alice: Tenant_, alice_model: str
):
    args = build_parser().parse_args(["finetune", "--model", "m", "--data", "d", "--out", "o", *cli_flags(values)])
    from_cli = config_from_args(args)

    dataset = client.post(
        "/v1/datasets", files={"file": ("t.jsonl", b'{"prompt": "a", "response": "b"}\n')}, headers=alice.headers
    ).json()["id"]
    body = {"model_id": alice_model, "dataset_id": dataset, **values}
    if from_cli.mode != "full":
        body["audit_id"] = succeeded_audit(client, db, alice, alice_model)
    r = client.post("/v1/finetunes", json=body, headers=alice.headers)
    assert r.status_code == 202, r.text
    stored = r.json()["params"]
    from_api = job_configs.finetune_config(
        stored, dataset_path=lambda dataset_id: pytest.fail("no dataset id in settings")
    )
    assert from_api == from_cli
    assert {name: stored[name] for name in values} == values  # the stored params round-trip


def test_an_uploaded_dataset_may_be_named_in_a_setting_and_reaches_the_worker_as_its_file(
    client: TestClient, alice: Tenant_, alice_model: str
):
    upload = client.post(
        "/v1/datasets", files={"file": ("r.jsonl", b'{"prompt": "a", "response": "b"}\n')}, headers=alice.headers
    ).json()["id"]
    body = {"model_id": alice_model, "dataset_id": upload, "mix_data": upload, "mix_pairs": 1}
    r = client.post("/v1/finetunes", json=body, headers=alice.headers)
    assert r.status_code == 202, r.text
    config = job_configs.finetune_config(
        r.json()["params"], dataset_path=lambda dataset_id: f"/store/{dataset_id}.jsonl"
    )
    assert config.mix_data == f"/store/{upload}.jsonl"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mix_data": "builtin:nope", "mix_pairs": 1}, "no builtin dataset"),
        ({"mix_data": "/etc/passwd", "mix_pairs": 1}, "builtin:NAME or by its id"),
        ({"mix_data": "00000000-0000-0000-0000-000000000000", "mix_pairs": 1}, "dataset"),
        ({"mix_pairs": 2}, "together"),  # the engine's own check, answered before the job is queued
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"epochs": 101}, "less than or equal to 100"),  # the service's cost limit
        ({"mode": "sideways"}, "full"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(
    values, message, client: TestClient, alice: Tenant_, alice_model: str
):
    dataset = client.post(
        "/v1/datasets", files={"file": ("t.jsonl", b'{"prompt": "a", "response": "b"}\n')}, headers=alice.headers
    ).json()["id"]
    r = client.post(
        "/v1/finetunes", json={"model_id": alice_model, "dataset_id": dataset, **values}, headers=alice.headers
    )
    assert r.status_code in (404, 422), r.text
    assert message in r.text


AUDIT = {
    "method": "wanda",
    "samples": 16,
    "cuts": {"ru": 0.0, "scu": 0.02, "ucu": 0.15},
    "max_length": 128,
    "batch_size": 2,
    "system_prompt": "Be careful.",
    "sampling": "first",
    "seed": 5,
    "estimator": "pooled",
    "response_tokens": "content",
    "responses": "self",
    "self_response_tokens": 12,
    "stream_layers": False,  # True needs written responses (responses="self" here) and a local checkpoint
}


def test_every_audit_setting_is_a_flag_and_a_request_field():
    names = {setting.name for setting in setting_fields(AuditConfig)}
    assert set(AuditCreate.model_fields) == names | PIPELINE | {
        "model_id",
        "safety_dataset_id",
        "utility_dataset_id",
        "placement",
    }
    args = build_parser().parse_args(["audit", "--model", "m", "--out", "o"])
    assert set(args.config_fields) == names == set(AUDIT)


def test_cli_and_api_give_the_audit_engine_the_same_config(client: TestClient, alice: Tenant_, alice_model: str):
    args = build_parser().parse_args(["audit", "--model", "m", "--out", "o", *cli_flags(AUDIT)])
    from_cli = audit_command.config_from_args(args)
    r = client.post("/v1/audits", json={"model_id": alice_model, **AUDIT}, headers=alice.headers)
    assert r.status_code == 202, r.text
    stored = r.json()["params"]
    assert job_configs.audit_config(stored) == from_cli
    assert from_cli.cuts.ru == 0.0  # refused by the API before the contract, accepted by engine and CLI
    assert {name: stored[name] for name in AUDIT} == AUDIT


@pytest.mark.parametrize(
    "values, message",
    [
        ({"cuts": {"scu": 1.0}}, "body.cuts.scu"),  # queued, then failed in the worker, before
        ({"cuts": {"tiny": 0.1}}, "cuts.tiny"),
        ({"estimator": "flap", "method": "snip"}, "wifv only"),
        ({"samples": 0}, "body.samples"),
    ],
)
def test_bad_audit_settings_are_refused_before_the_job_is_queued(
    values, message, client: TestClient, alice: Tenant_, alice_model: str
):
    r = client.post("/v1/audits", json={"model_id": alice_model, **values}, headers=alice.headers)
    assert r.status_code == 422 and message in r.text, r.text


PROBE = {
    "ks": [1, 3],
    "pool": "mean",
    "queries": 7,
    "refusal_text": "I won't.",
    "compliance_text": "Sure thing:",
    "calibration": 12,
    "holdout": 0.5,
    "max_layer_fraction": 0.5,
    "random_seed": 4,
    "batch_size": 3,
    "max_length": 64,
    "system_prompt": "Be careful.",
    "prompt_format": "no_inst",
    "share_prefix": False,
}


def test_cli_and_api_give_the_probe_engine_the_same_config(client: TestClient, alice: Tenant_, alice_model: str):
    names = {setting.name for setting in setting_fields(ProbeConfig)}
    assert set(ProbeCreate.model_fields) == names | PIPELINE | {
        "model_id",
        "audit_id",
        "harmful_dataset_id",
        "harmless_dataset_id",
        "placement",
    }
    args = build_parser().parse_args(["probe", "--model", "m", "--out", "o", *cli_flags(PROBE)])
    assert set(args.config_fields) == names == set(PROBE)
    r = client.post("/v1/probes", json={"model_id": alice_model, **PROBE}, headers=alice.headers)
    assert r.status_code == 202, r.text
    assert job_configs.probe_config(r.json()["params"]) == probe_command.config_from_args(args)


# The same evaluation in both syntaxes: CLI flags, and the request body's fields.
EVAL_FLAGS = [
    "--samples",
    "5",
    "--max-new-tokens",
    "12",
    "--batch-size",
    "3",
    "--conditions",
    "no_system,system",
    "--prompt-format",
    "no_inst",
    "--system-prompt",
    "Be careful.",
    "--refusal-lists",
    "advbench-29",
    "--zero-shot-tasks",
    "",
    "--zero-shot-num-fewshot",
    "2",
    "--compensation",
    "safety",
]
EVAL_BODY = {
    "samples": 5,
    "max_new_tokens": 12,
    "batch_size": 3,
    "conditions": ["no_system", "system"],
    "prompt_format": "no_inst",
    "system_prompt": "Be careful.",
    "refusal_lists": ["advbench-29"],
    "zero_shot_tasks": [],
    "zero_shot_num_fewshot": 2,
    "compensation": "safety",
}


def test_cli_and_api_give_the_evaluation_the_same_protocol(client: TestClient, alice: Tenant_, alice_model: str):
    from ssah.commands.eval import build_protocol

    from_cli = build_protocol(build_parser().parse_args(["eval", "--model", "m", "--out", "o", *EVAL_FLAGS]))
    r = client.post("/v1/evaluations", json={"model_id": alice_model, **EVAL_BODY}, headers=alice.headers)
    assert r.status_code == 202, r.text
    from_api = job_configs.evaluation_protocol(r.json()["params"], harmful=None, instructions=None, sample_limit=None)
    assert from_api == from_cli and from_api.hash == from_cli.hash
    assert {name: r.json()["params"][name] for name in EVAL_BODY} == EVAL_BODY  # the stored params round-trip


def test_evaluation_defaults_are_the_protocols(client: TestClient, alice: Tenant_, alice_model: str):
    from ssah_engine.evaluation import Protocol

    r = client.post("/v1/evaluations", json={"model_id": alice_model}, headers=alice.headers)
    stored = r.json()["params"]
    protocol = job_configs.evaluation_protocol(stored, harmful=None, instructions=None, sample_limit=None)
    assert protocol == Protocol()  # an empty request evaluates exactly as a bare `ssah eval`
    for name in ("max_new_tokens", "batch_size", "prompt_format", "conditions"):
        assert stored[name] == Protocol().to_dict()[name], name


def test_a_preset_that_freezes_needs_an_audit(client: TestClient, alice: Tenant_, alice_model: str):
    dataset = client.post(
        "/v1/datasets", files={"file": ("t.jsonl", b'{"prompt": "a", "response": "b"}\n')}, headers=alice.headers
    ).json()["id"]
    body = {"model_id": alice_model, "dataset_id": dataset, "preset": "keep-refusals"}
    r = client.post("/v1/finetunes", json=body, headers=alice.headers)
    assert r.status_code == 422 and "mode 'freeze' needs audit_id" in r.text


# ------------------------------------------------------------------ the evaluation's judge: one definition, JudgeSpec

JUDGE_FLAGS = [
    "--judge",
    "org/guard",
    "--judge-kind",
    "llama-guard",
    "--judge-revision",
    "v3",
    "--judge-max-new-tokens",
    "12",
    "--judge-dtype",
    "bfloat16",
    "--judge-device-map",
    "auto",
    "--judge-max-length",
    "2048",
]
JUDGE_BODY = {
    "source": "org/guard",
    "kind": "llama-guard",
    "revision": "v3",
    "max_new_tokens": 12,
    "dtype": "bfloat16",
    "device_map": "auto",
    "max_length": 2048,
}


def test_the_judge_request_has_every_judge_spec_field_with_its_default():
    import dataclasses

    from service.schemas.jobs import JudgeRequest
    from ssah_engine.judge_spec import JudgeSpec

    defaults = {item.name: item.default for item in dataclasses.fields(JudgeSpec)}
    assert set(JudgeRequest.model_fields) == set(defaults)
    for name, field in JudgeRequest.model_fields.items():
        assert field.default == defaults[name], name
    args = build_parser().parse_args(["eval", "--model", "m", "--out", "o"])
    assert set(args.judge_fields) | {"source", "kind"} == set(defaults)  # every field is a --judge-* flag too


def test_cli_and_api_give_the_evaluation_the_same_judge(client: TestClient, alice: Tenant_, alice_model: str):
    from ssah.commands.eval import build_protocol

    from_cli = build_protocol(build_parser().parse_args(["eval", "--model", "m", "--out", "o", *JUDGE_FLAGS]))
    r = client.post("/v1/evaluations", json={"model_id": alice_model, "judge": JUDGE_BODY}, headers=alice.headers)
    assert r.status_code == 202, r.text
    from_api = job_configs.evaluation_protocol(r.json()["params"], harmful=None, instructions=None, sample_limit=None)
    assert from_api.judge == from_cli.judge and from_api.hash == from_cli.hash
    assert from_api.judge is not None and from_api.judge.kind == "llama-guard" and from_api.judge.dtype == "bfloat16"


@pytest.mark.parametrize(
    "judge, message",
    [
        ({"source": "org/guard", "kind": "vibes"}, "body.judge.kind"),
        ({"source": "org/guard", "kind": "causal"}, "body.judge.kind"),  # the engine's old name is CLI-only
        ({"source": "org/cls", "kind": "harmbench", "prompt_template": "no slots"}, "lacks {prompt} and {response}"),
        ({"source": "org/guard", "api_key": "sk-1"}, "body.judge.api_key"),  # a key is never a field
        (
            {"source": "org/guard", "kind": "llama-guard", "base_url": "http://evil.example/v1"},
            "judge_endpoint_not_allowed",
        ),
        ({"source": "/etc", "kind": "llama-guard"}, "body.judge.source"),  # the model policy applies to judges
    ],
)
def test_bad_judges_are_refused_before_the_job_is_queued(
    judge, message, client: TestClient, alice: Tenant_, alice_model: str
):
    r = client.post("/v1/evaluations", json={"model_id": alice_model, "judge": judge}, headers=alice.headers)
    assert r.status_code == 422 and message in r.text, r.text


def test_an_endpoint_judge_takes_only_the_deployments_endpoints_and_key_variables(
    make_app, alice: Tenant_, alice_model: str
):
    judge = {"source": "guard", "kind": "llama-guard", "base_url": "http://judge.internal:8000/v1/"}
    with TestClient(make_app(judge_endpoints="http://judge.internal:8000/v1", judge_key_envs="GUARD_KEY")) as client:
        refused = client.post(
            "/v1/evaluations",
            json={"model_id": alice_model, "judge": judge | {"api_key_env": "SSAH_DATABASE_URL"}},
            headers=alice.headers,
        )
        assert refused.status_code == 422 and "judge_key_env_not_allowed" in refused.text
        assert "body.judge.api_key_env" in refused.text
        accepted = client.post(
            "/v1/evaluations",
            json={"model_id": alice_model, "judge": judge | {"api_key_env": "GUARD_KEY"}},
            headers=alice.headers,
        )
    assert accepted.status_code == 202, accepted.text
    stored = accepted.json()["params"]["judge"]
    assert stored["api_key_env"] == "GUARD_KEY" and "key" not in {k for k in stored if k != "api_key_env"}
    protocol = job_configs.evaluation_protocol(
        accepted.json()["params"], harmful=None, instructions=None, sample_limit=None
    )
    assert protocol.judge is not None and protocol.judge.base_url == judge["base_url"]


def test_cli_and_api_give_the_loader_the_same_placement(client: TestClient, alice: Tenant_, alice_model: str):
    """--device-map/--max-memory and the REST placement object are Placement's fields (the folder is the worker's)."""
    from ssah.commands.common import placement_from_args

    values = {"device_map": "balanced", "max_memory": "0=20GiB,1=20GiB,cpu=64GiB"}
    flags = ["--device-map", values["device_map"], "--max-memory", values["max_memory"]]
    from_cli = placement_from_args(build_parser().parse_args(["audit", "--model", "m", "--out", "o", *flags]))
    r = client.post("/v1/audits", json={"model_id": alice_model, "placement": values}, headers=alice.headers)
    assert r.status_code == 202, r.text
    assert Placement.from_dict(r.json()["params"]["placement"]) == from_cli == Placement(**values)
    r = client.post(
        "/v1/audits",
        json={"model_id": alice_model, "placement": {"device_map": "auto", "max_memory": "x"}},
        headers=alice.headers,
    )
    assert r.status_code == 422 and "DEVICE=AMOUNT" in r.text, r.text
