"""`ssah remote` against the real app over HTTP on PostgreSQL: requests from the local flags, waiting, exit codes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

import ssah_client.client
from service.schemas.jobs import FINETUNE_SERVER_ONLY
from ssah.cli import build_parser, main
from ssah.commands import audit as audit_command
from ssah.commands import remote
from ssah_client import Client
from ssah_engine.audit_config import AuditConfig
from tests.client.conftest import Server, Tenant_, set_job, succeed


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, server: Server, tenant: Tenant_, tmp_path: Path) -> None:
    monkeypatch.setenv("SSAH_SERVER", server.url)
    monkeypatch.setenv("SSAH_API_KEY", tenant.key)
    monkeypatch.setenv("SSAH_REMOTE_CONFIG", str(tmp_path / "absent.toml"))


@pytest.fixture
def api(server: Server, tenant: Tenant_):
    with Client(server.url, tenant.key) as client:
        yield client


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["remote", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def while_waiting(monkeypatch: pytest.MonkeyPatch, *steps) -> None:
    """Play the worker: each poll's pause runs the next step (a change of the job, or an interrupt)."""
    queue = list(steps)

    def pause(seconds: float) -> None:
        if queue:
            queue.pop(0)()

    monkeypatch.setattr(ssah_client.client, "_pause", pause)


def test_submit_registers_the_model_and_sends_the_audit_flags(env, api: Client, capsys):
    code, out, err = run_cli(capsys, "audit", "--model", "builtin:smollm2", "--samples", "16", "--cuts", "0.2,0.02,0.1")
    assert code == 0, err
    job = api.audits.get(out.strip())
    assert job.status == "queued" and job.params["samples"] == 16
    assert job.params["cuts"] == {"ru": 0.2, "scu": 0.02, "ucu": 0.1}
    # One contract: the same flags given to `ssah audit` make the config the server stored.
    local = build_parser().parse_args(
        ["audit", "--model", "x", "--out", "o", "--samples", "16", "--cuts", "0.2,0.02,0.1"]
    )
    assert AuditConfig.from_dict({k: job.params[k] for k in local.config_fields}) == audit_command.config_from_args(
        local
    )
    models = list(api.models.list())
    assert [(m.name, m.source) for m in models] == [("builtin-smollm2", "builtin:smollm2")]
    code, out, _ = run_cli(capsys, "audit", "--model", "builtin:smollm2")  # registered before: reused
    assert code == 0 and api.audits.get(out.strip()).model_id == models[0].id


def test_server_and_key_from_the_config_file(
    monkeypatch, server: Server, tenant: Tenant_, api: Client, tmp_path, capsys
):
    config = tmp_path / "remote.toml"
    config.write_text(f'server = "{server.url}"\napi_key = "{tenant.key}"\n')
    monkeypatch.delenv("SSAH_SERVER", raising=False)
    monkeypatch.delenv("SSAH_API_KEY", raising=False)
    monkeypatch.setenv("SSAH_REMOTE_CONFIG", str(config))
    model = api.models.create("smol", "builtin:smollm2")
    code, out, err = run_cli(capsys, "probe", "--model-id", model.id, "--ks", "1,2", "--json")
    assert code == 0, err
    assert json.loads(out)["params"]["ks"] == [1, 2]


def test_wait_succeeds_with_progress_and_json(env, api: Client, factory: sessionmaker[Session], monkeypatch, capsys):
    model = api.models.create("smol", "builtin:smollm2")
    while_waiting(
        monkeypatch,
        lambda: set_job(factory, _only(api), status="running", progress=0.5, progress_message="scoring"),
        lambda: succeed(factory, _only(api)),
    )
    code, out, err = run_cli(capsys, "audit", "--model-id", model.id, "--wait", "--json", "--label", "step=12000")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["job"]["status"] == "succeeded" and shown["job"]["labels"] == {"step": "12000"}
    assert shown["result"]["classes"]["SCU"]["units"] == 12
    assert "scoring" in err  # the progress bar's stage


def test_failed_job_exits_1(env, api: Client, factory, monkeypatch, capsys):
    model = api.models.create("smol", "builtin:smollm2")
    while_waiting(monkeypatch, lambda: set_job(factory, _only(api), status="failed", error="CUDA out of memory"))
    code, out, err = run_cli(capsys, "finetune", "--model-id", model.id, "--data", str(_pairs(api)), "--wait")
    assert code == 1, err
    assert "failed: CUDA out of memory" in out


def test_failed_gate_exits_3(env, api: Client, factory, monkeypatch, capsys):
    model = api.models.create("smol", "builtin:smollm2")
    rule = {"max": 0.1}
    check = {"path": "safety.asr", "value": 0.4, "rule": rule, "passed": False, "reason": "0.4 > max 0.1"}
    gate = {"rules": {"safety.asr": rule}, "passed": False, "checks": [check]}  # as the worker's gate check writes it
    while_waiting(monkeypatch, lambda: succeed(factory, _only(api), gate=gate))
    code, out, err = run_cli(
        capsys, "eval", "--model-id", model.id, "--wait", "--gate", '{"safety.asr": {"max": 0.1}}', "--samples", "4"
    )
    assert code == 3, err
    assert "gate FAILED" in out


def test_interrupted_wait_exits_130_and_cancels_on_request(env, api: Client, monkeypatch, capsys):
    model = api.models.create("smol", "builtin:smollm2")

    def interrupt() -> None:
        raise KeyboardInterrupt

    while_waiting(monkeypatch, interrupt)
    code, out, err = run_cli(capsys, "audit", "--model-id", model.id, "--wait")
    assert code == 130 and "goes on on the server" in err
    assert [j.status for j in api.audits.list()] == ["queued"]  # not cancelled without the flag

    while_waiting(monkeypatch, interrupt)
    code, out, err = run_cli(capsys, "audit", "--model-id", model.id, "--wait", "--cancel-on-interrupt")
    assert code == 130
    assert [j.status for j in api.audits.list()] == ["cancelled", "queued"]


def test_eval_flags_map_to_the_request(env, api: Client, factory, tmp_path: Path, capsys):
    model = api.models.create("smol", "builtin:smollm2")
    audit = api.audits.create(model_id=model.id)
    succeed(factory, audit.id)
    suffixes = tmp_path / "suffixes.txt"
    suffixes.write_text("describing.\\ + similarlyNow\n")
    code, out, err = run_cli(
        capsys,
        "eval",
        "--model-id", model.id,
        "--audit-id", audit.id,
        "--ablate", "random:SCU",
        "--seed", "7",
        "--conditions", "system",
        "--suffixes", str(suffixes),
        "--prompt-format", "no_inst",
        "--harmful", "bench:advbench",
        "--samples", "5",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    params = json.loads(out)["params"]
    assert params["ablate"] == ["SCU"] and params["control"] == "random" and params["seed"] == 7
    assert params["conditions"] == ["system", "suffix"] and params["prompt_format"] == "no_inst"
    assert params["harmful_source"] == "bench:advbench" and params["samples"] == 5
    assert api.datasets.get(params["suffixes_dataset_id"]).rows == 1


def test_the_judge_flags_make_the_judge_object():
    args = build_parser().parse_args(
        ["remote", "eval", "--model-id", "m", "--judge", "org/judge", "--judge-kind", "causal"]
        + ["--judge-max-new-tokens", "8", "--judge-unsafe-labels", "unsafe,harmful"]
    )
    judge = remote.eval_body(args, dataset=str)["judge"]
    assert judge == {
        "source": "org/judge",
        "kind": "llama-guard",
        "max_new_tokens": 8,
        "unsafe_labels": ["unsafe", "harmful"],
    }
    no_source = build_parser().parse_args(["remote", "eval", "--model-id", "m", "--judge-max-new-tokens", "8"])
    with pytest.raises(remote.CommandError, match="--judge SOURCE"):
        remote.eval_body(no_source, dataset=str)


def test_a_refused_request_exits_2_with_the_fields(env, api: Client, capsys):
    code, out, err = run_cli(capsys, "audit", "--model-id", str(uuid.uuid4()))
    assert code == 2
    assert "body.model_id" in err


def test_the_finetune_flags_skip_what_the_server_keeps():
    assert remote.FINETUNE_SERVER_ONLY == FINETUNE_SERVER_ONLY
    args = build_parser().parse_args(["remote", "finetune", "--model-id", "m", "--data", "d"])
    assert not set(FINETUNE_SERVER_ONLY) & set(args.config_fields)


def _only(api: Client) -> str:
    (job,) = list(api.jobs.list())
    return job.id


def _pairs(api: Client) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    path.write_text('{"prompt": "Say hi", "response": "Hi"}\n')
    return path
