"""The model-source policy: pure unit tests of every rule, then the API refusing at registration and submit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.model_policy import ModelPolicy, SourceRefused, tenant_model_root
from service.models import Job, ModelSource
from service.settings import Settings
from tests.service.conftest import Tenant_, register_model

ANY_ORG = ModelPolicy.create(allowed_hub_orgs=None, allowed_local_roots=[])


def rule_of(policy: ModelPolicy, source: str, **kwargs: object) -> str:
    with pytest.raises(SourceRefused) as caught:
        policy.check(source, **kwargs)
    return caught.value.rule


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("../etc/passwd", "no_parent_components"),
        ("/models/../etc/passwd", "no_parent_components"),
        ("org/../model", "no_parent_components"),
        ("http://evil.example/model", "no_urls"),
        ("https://huggingface.co/org/model", "no_urls"),
        ("file:///etc/passwd", "no_urls"),
        ("s3://bucket/model", "no_urls"),
        ("hf:org/model", "no_urls"),
        ("//server/share/model", "no_urls"),
        ("org/model\x00", "no_control_characters"),
        ("org/mo\ndel", "no_control_characters"),
        ("org/model\u200b", "no_control_characters"),
        ("org\\model", "no_backslashes"),
        ("-org/model", "malformed_hub_id"),
        ("org/model--x", "malformed_hub_id"),
        ("org/model.", "malformed_hub_id"),
        ("a/b/c", "malformed_hub_id"),
        ("org/", "malformed_hub_id"),
        ("o" * 97 + "/model", "malformed_hub_id"),
        ("org/model@", "malformed_revision"),
        ("org/model@../main", "malformed_revision"),
        ("org/model@main;rm -rf", "malformed_revision"),
        ("org/model@a//b", "malformed_revision"),
        ("org/model@main.lock", "malformed_revision"),
        ("org/model@x@y", "malformed_hub_id"),
        ("builtin:SmolLM2", "malformed_builtin"),
        ("builtin:../x", "malformed_builtin"),
        ("builtin:", "malformed_builtin"),
        ("/etc", "allowed_local_roots"),
        ("/models/llama.gguf", "allowed_local_roots"),
        ("model.gguf", "absolute_paths_only"),
        ("./model", "absolute_paths_only"),
        ("~/model", "absolute_paths_only"),
        ("", "malformed_source"),
        ("x" * 1001, "malformed_source"),
    ],
)
def test_default_policy_refuses_with_the_rule(source: str, rule: str):
    assert rule_of(ANY_ORG, source) == rule


@pytest.mark.parametrize(
    "source",
    [
        "builtin:smollm2",
        "builtin:tiny-llama",
        "builtin:nope",  # the loader names unknown builtins
        "meta-llama/Llama-3.2-1B-Instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "gpt2",
        "org/model@main",
        "org/model@v1.0",
        "org/model@refs/heads/main",
        "org/model@refs/tags/v1",
        "org/model@" + "a1" * 20,
    ],
)
def test_default_policy_accepts_builtins_and_any_hub_org(source: str):
    assert ANY_ORG.check(source).source == source


@pytest.mark.parametrize(
    "revision", ["refs/pr/1", "refs/pr/999", "refs/convert/parquet", "REFS/PR/1", "refs/Convert/duckdb", "refs/other/x"]
)
def test_pull_request_and_conversion_revisions_are_refused_even_for_an_allowed_org(revision: str):
    # The attack: SSAH_ALLOWED_HUB_ORGS=Qwen, then a community pull request of a Qwen repo (anyone can open one).
    policy = ModelPolicy.create(allowed_hub_orgs=["Qwen"], allowed_local_roots=[])
    assert rule_of(policy, f"Qwen/Qwen2.5-0.5B@{revision}") == "hub_pr_revisions"
    assert rule_of(ANY_ORG, f"Qwen/Qwen2.5-0.5B@{revision}") == "hub_pr_revisions"
    opted_in = ModelPolicy.create(allowed_hub_orgs=["Qwen"], allowed_local_roots=[], allow_hub_pr_revisions=True)
    assert opted_in.check(f"Qwen/Qwen2.5-0.5B@{revision}").revision == revision


def test_the_deployment_setting_allows_pull_request_revisions():
    assert ModelPolicy.from_settings(Settings(allow_hub_pr_revisions=True)).check("org/m@refs/pr/2").kind == "hub"
    assert rule_of(ModelPolicy.from_settings(Settings()), "org/m@refs/pr/2") == "hub_pr_revisions"


def test_hub_orgs_are_an_allow_list_and_bare_names_need_an_org():
    policy = ModelPolicy.create(allowed_hub_orgs=["meta-llama", "Qwen"], allowed_local_roots=[])
    assert policy.check("meta-llama/Llama-3.2-1B").org == "meta-llama"
    assert policy.check("qwen/Qwen3-0.6B@main").revision == "main"  # hub organisations are case-insensitive
    assert rule_of(policy, "evil/model") == "allowed_hub_orgs"
    assert rule_of(policy, "gpt2") == "allowed_hub_orgs"
    assert policy.check("builtin:smollm2").kind == "builtin"  # always allowed
    assert (
        rule_of(ModelPolicy.create(allowed_hub_orgs=[], allowed_local_roots=[]), "meta-llama/x") == "allowed_hub_orgs"
    )


def test_local_paths_only_under_roots_and_symlinks_are_resolved(tmp_path: Path):
    root, outside = tmp_path / "models", tmp_path / "outside"
    (root / "llama").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "inner").symlink_to(root / "llama")
    (root / "x.gguf").write_bytes(b"GGUF")
    policy = ModelPolicy.create(allowed_hub_orgs=None, allowed_local_roots=[root])
    assert policy.check(str(root / "llama")).kind == "local"
    assert policy.check(str(root / "inner")).kind == "local"  # a link that stays inside is fine
    assert policy.check(str(root / "x.gguf")).kind == "gguf"
    assert policy.check(str(root / "not-yet-there")).kind == "local"  # existence is the loader's business
    assert rule_of(policy, str(root / "escape")) == "symlink_escape"
    assert rule_of(policy, str(root / "escape" / "sub")) == "symlink_escape"
    assert rule_of(policy, str(outside)) == "allowed_local_roots"
    assert rule_of(policy, str(tmp_path / "models-evil")) == "allowed_local_roots"  # a prefix is not a parent
    assert rule_of(policy, "/etc/x.gguf") == "allowed_local_roots"
    assert ANY_ORG.check(str(root / "llama"), extra_roots=[root]).kind == "local"


def test_a_hub_id_that_names_a_relative_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the loader would read org/model as this directory
    assert rule_of(ANY_ORG, "org/model") == "absolute_paths_only"


def test_refusal_message_names_source_rule_and_escapes_control_characters():
    with pytest.raises(SourceRefused) as caught:
        ANY_ORG.check("org/model\x00evil")
    message = str(caught.value)
    assert "no_control_characters" in message and "org/model\\x00evil" in message and "\x00" not in message
    assert isinstance(caught.value, ValueError)  # the worker fails such jobs without retrying


def test_settings_read_comma_separated_lists(monkeypatch: pytest.MonkeyPatch):
    assert (Settings().allowed_hub_orgs, Settings().allowed_local_roots, Settings().allow_trust_remote_code) == (
        None,
        [],
        False,
    )
    monkeypatch.setenv("SSAH_ALLOWED_HUB_ORGS", "meta-llama, Qwen")
    monkeypatch.setenv("SSAH_ALLOWED_LOCAL_ROOTS", "/models,/srv/gguf")
    settings = Settings()
    assert settings.allowed_hub_orgs == ["meta-llama", "Qwen"]
    assert settings.allowed_local_roots == [Path("/models"), Path("/srv/gguf")]
    assert ModelPolicy.from_settings(settings).allowed_hub_orgs == {"meta-llama", "qwen"}
    monkeypatch.setenv("SSAH_ALLOWED_HUB_ORGS", "")
    assert Settings().allowed_hub_orgs == []  # set but empty: no hub models at all
    with pytest.raises(ValueError, match="absolute"):
        ModelPolicy.create(allowed_hub_orgs=None, allowed_local_roots=["models"])


# --- through the API ---------------------------------------------------------------------------------------


def register(client: TestClient, tenant: Tenant_, source: str, name: str = "m"):
    return client.post("/v1/models", json={"name": name, "source": source}, headers=tenant.headers)


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("../../etc/passwd", "no_parent_components"),
        ("file:///etc/passwd", "no_urls"),
        ("http://evil.example/m", "no_urls"),
        ("/etc", "allowed_local_roots"),
        ("org/model@..", "malformed_revision"),
        ("org/mo\u0000del", "no_control_characters"),
    ],
)
def test_registration_refuses_with_a_problem_naming_the_rule(
    client: TestClient, db: Session, alice: Tenant_, source: str, rule: str
):
    r = register(client, alice, source)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "urn:ssah:problem:model-source-refused" and body["rule"] == rule
    assert rule in body["detail"] and body["errors"][0]["loc"] == "body.source"
    assert db.scalar(sa.select(sa.func.count()).select_from(ModelSource)) == 0


def test_deployment_allow_lists_apply_at_registration(
    make_app: Callable[..., FastAPI], alice: Tenant_, tmp_path: Path, redis_client: object
):
    root = tmp_path / "models"
    (root / "llama").mkdir(parents=True)
    app = make_app(allowed_hub_orgs=["meta-llama"], allowed_local_roots=[root])
    with TestClient(app) as client:
        assert register(client, alice, "meta-llama/Llama-3.2-1B", "a").status_code == 201
        assert register(client, alice, str(root / "llama"), "b").status_code == 201
        assert register(client, alice, "builtin:smollm2", "c").status_code == 201
        refused = register(client, alice, "evil/model", "d")
        assert refused.status_code == 422 and refused.json()["rule"] == "allowed_hub_orgs"
        assert "meta-llama" in refused.json()["detail"]
        assert register(client, alice, str(tmp_path), "e").json()["rule"] == "allowed_local_roots"


def test_a_tenant_may_register_its_own_fine_tuned_model_but_not_anothers(
    client: TestClient, app: FastAPI, alice: Tenant_, bob: Tenant_
):
    artifact_dir = app.state.settings.artifact_dir
    model_dir = Path(tenant_model_root(artifact_dir, alice.id)) / "job-1" / "finetune" / "model"
    model_dir.mkdir(parents=True)
    assert register(client, alice, str(model_dir)).status_code == 201
    r = register(client, bob, str(model_dir))
    assert r.status_code == 422 and r.json()["rule"] == "allowed_local_roots"


def test_submit_rechecks_the_policy_of_a_registered_model(
    make_app: Callable[..., FastAPI], db: Session, alice: Tenant_, redis_client: object
):
    model_id = register_model(db, alice)  # source "org/model", registered before the policy tightened
    with TestClient(make_app(allowed_hub_orgs=["meta-llama"])) as client:
        for path, body in (("/v1/audits", {"model_id": model_id}), ("/v1/evaluations", {"model_id": model_id})):
            r = client.post(path, json=body, headers=alice.headers)
            assert r.status_code == 422, r.text
            assert r.json()["rule"] == "allowed_hub_orgs" and r.json()["errors"][0]["loc"] == "body.model_id"
    assert db.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_the_policy_module_stays_pure():
    import ast

    tree = ast.parse(Path(os.path.dirname(__file__), "..", "..", "service", "model_policy.py").read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    # The worker imports it: no web framework, no database, nothing heavy.
    assert imported <= {"__future__", "os", "re", "unicodedata", "collections", "dataclasses", "pathlib", "typing"}
