"""A job's placement (the REST ``placement`` object, Placement's fields less the offload folder) reaches the
loader: an audit with a device map that offloads half the layers to disk labels units as the plain job."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from service.schemas.jobs import AuditCreate, EvaluationCreate, FinetuneCreate, ProbeCreate
from ssah_engine import loading
from ssah_engine.unitmap import UnitMap as EngineUnitMap
from tests.worker.conftest import add_job, add_model, reload
from tests.worker.test_tasks import AUDIT, _run
from worker import models


def test_an_offloaded_audit_job_labels_units_as_the_plain_job(
    db, tenant, settings, factory, store, tmp_path, monkeypatch
):
    from ssah_engine.testing import tiny_model

    model, tokenizer = tiny_model("llama", num_layers=4, seed=1)
    checkpoint = tmp_path / "models" / "tiny"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    weights = (checkpoint / "model.safetensors").stat().st_size
    local = settings.model_copy(update={"allowed_local_roots": [tmp_path / "models"], "device": "cpu"})
    model_id = add_model(db, tenant, str(checkpoint))
    placement = {"device_map": "auto", "max_memory": f"cpu={int(0.6 * weights)}"}
    plain = add_job(db, tenant, "audit", AUDIT, model_id)
    placed = add_job(db, tenant, "audit", {**AUDIT, "placement": placement}, model_id)

    maps: list = []
    original = loading.load_model

    def recording(source, options=None):
        loaded = original(source, options)
        maps.append((options.placement, getattr(loaded.model, "hf_device_map", None)))
        return loaded

    monkeypatch.setattr(loading, "load_model", recording)  # a placed model: loaded fresh, never cached
    monkeypatch.setattr(models, "load_model", recording)  # the per-process cache's loader
    assert _run(plain, "audit", local, factory, store) == "succeeded", reload(db, plain).error
    assert _run(placed, "audit", local, factory, store) == "succeeded", reload(db, placed).error
    (plain_placement, plain_map), (used, device_map) = maps
    assert plain_map is None and not plain_placement.active
    assert used.device_map == "auto" and used.offload_folder and "offload" in used.offload_folder  # the job's scratch
    assert set(device_map.values()) == {"cpu", "disk"}
    found = [
        EngineUnitMap.load(Path(settings.artifact_dir) / f"{tenant}/jobs/{job}/unit_map") for job in (plain, placed)
    ]
    assert torch.equal(found[0].labels, found[1].labels)
    torch.testing.assert_close(found[0].z_safety, found[1].z_safety, rtol=1e-5, atol=1e-6)


def test_the_placement_body_is_the_engines_placement():
    model = str(uuid.uuid4())
    body = AuditCreate(model_id=model, placement={"device_map": "balanced", "max_memory": "0=70GiB,1=70GiB,cpu=200GiB"})
    assert body.model_dump(mode="json")["placement"] == {
        "device_map": "balanced",
        "max_memory": "0=70GiB,1=70GiB,cpu=200GiB",
    }
    assert EvaluationCreate(model_id=model, placement={"device_map": "auto"}).placement.device_map == "auto"
    assert ProbeCreate(model_id=model, placement={"device_map": "sequential"}).placement.device_map == "sequential"
    for placement, message in (
        ({"device_map": "auto", "max_memory": "gpu0=1GiB"}, "DEVICE=AMOUNT"),
        ({"max_memory": "cpu=1GiB"}, "give device_map too"),
        ({"device_map": "everywhere"}, "device_map"),
        ({"device_map": "auto", "offload_folder": "/etc"}, "Extra inputs"),  # a server path: the worker's choice
    ):
        with pytest.raises(ValidationError, match=message):
            AuditCreate(model_id=model, placement=placement)
    with pytest.raises(ValidationError, match="one layer on one device"):
        AuditCreate(model_id=model, stream_layers=True, placement={"device_map": "auto"})
    with pytest.raises(ValidationError, match="Extra inputs"):  # fine-tunes train on one device
        FinetuneCreate(model_id=model, dataset_id=model, placement={"device_map": "auto"})
