"""Queues by GPU memory class: a job's model size picks the smallest class that holds it; a worker takes its
class and the smaller ones; the message lands in that class's Redis queue."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from sqlalchemy.orm import Session

from service.gpu_routing import (
    GpuClass,
    class_of_memory,
    estimate_parameters,
    gpu_classes,
    memory_need,
    model_parameters,
    queue_for,
    worker_queues,
)
from service.models import ModelSource
from service.queue import make_celery, send_job
from service.settings import Settings
from tests.worker.conftest import add_job

CLASSES = gpu_classes(["80g", "24g", "141g"])
LLAMA_8B = {  # Llama-3-8B's config.json fields
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "vocab_size": 128256,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "tie_word_embeddings": False,
}


def test_model_size_picks_the_smallest_class_that_holds_it():
    assert [gpu.gigabytes for gpu in CLASSES] == [24, 80, 141]
    parameters = estimate_parameters(LLAMA_8B)
    assert 8.0e9 < parameters < 8.1e9  # 8.03 B
    assert queue_for("gpu", memory_need("audit", parameters), CLASSES) == "gpu-24g"  # 20 GB in bf16
    assert queue_for("gpu", memory_need("finetune", parameters), CLASSES) == "gpu-141g"  # 160 GB: fp32 + AdamW
    assert queue_for("gpu", memory_need("audit", 30e9), CLASSES) == "gpu-80g"  # 75 GB
    assert queue_for("gpu", memory_need("audit", 70e9), CLASSES) == "gpu-141g"  # 175 GB: the largest there is
    assert queue_for("gpu", None, CLASSES) == "gpu-141g"  # unknown size: never a small card
    assert queue_for("cpu", 1e12, CLASSES) == "cpu"
    assert queue_for("gpu", 1e12, []) == "gpu"  # no classes: the one gpu queue, as before


def test_the_estimate_is_the_workers():
    from transformers import LlamaConfig

    from worker.model_size import estimate

    config = LlamaConfig(**LLAMA_8B)
    assert estimate_parameters(config) == estimate(config).parameters == estimate_parameters(LLAMA_8B)


def test_a_gpu_belongs_to_the_largest_class_it_holds_and_serves_the_smaller_ones():
    h100 = 81559 * 2**20  # nvidia-smi's memory.total of an H100 80GB, MiB
    rtx4090 = 24564 * 2**20
    assert class_of_memory(h100, CLASSES) == GpuClass(80)
    assert class_of_memory(rtx4090, CLASSES) == GpuClass(24)
    assert class_of_memory(16 * 2**30, CLASSES) is None
    assert worker_queues(GpuClass(80), CLASSES) == ["gpu", "gpu-24g", "gpu-80g"]
    assert worker_queues(GpuClass(24), CLASSES) == ["gpu", "gpu-24g"]
    assert worker_queues(None, CLASSES) == ["gpu"]
    with pytest.raises(ValueError, match="decimal GB"):
        GpuClass.parse("80GB")


def test_registered_size_or_local_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B))
    assert model_parameters(str(tmp_path), {}) == estimate_parameters(LLAMA_8B)
    assert model_parameters(str(tmp_path), {"parameters": "70e9"}) == 70_000_000_000
    assert model_parameters("org/hub-model", {}) is None


def _model(db: Session, tenant: uuid.UUID, source: str, labels: dict | None = None) -> uuid.UUID:
    model = ModelSource(tenant_id=tenant, name=f"m-{uuid.uuid4().hex[:6]}", source=source, labels=labels or {})
    db.add(model)
    db.commit()
    return model.id


def test_jobs_land_in_their_class_queue(
    db: Session, tenant: uuid.UUID, redis_client: redis.Redis, broker_url, tmp_path
):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B))
    celery = make_celery(Settings(broker_url=broker_url, gpu_classes="24g,80g,141g"))  # type: ignore[arg-type]
    small = add_job(db, tenant, "audit", {}, _model(db, tenant, str(tmp_path)))
    labelled = add_job(db, tenant, "audit", {}, _model(db, tenant, "org/big", {"parameters": "30e9"}))
    tuned = add_job(db, tenant, "finetune", {}, _model(db, tenant, str(tmp_path)))
    compared = add_job(db, tenant, "comparison", {})
    sent = {
        job: send_job(celery, job_id=job, kind=kind, session=db)
        for job, kind in ((small, "audit"), (labelled, "audit"), (tuned, "finetune"), (compared, "comparison"))
    }
    assert sent == {small: "gpu-24g", labelled: "gpu-80g", tuned: "gpu-141g", compared: "cpu"}
    for queue, job in (("gpu-24g", small), ("gpu-80g", labelled), ("gpu-141g", tuned), ("cpu", compared)):
        messages = [json.loads(m) for m in redis_client.lrange(queue, 0, -1)]
        assert [m["headers"]["argsrepr"] for m in messages] == [repr([str(job)])]
    assert redis_client.llen("gpu") == 0
