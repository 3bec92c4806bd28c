"""Request body examples shown in the OpenAPI description (``openapi_extra`` of each create route).

``tests/client/test_openapi.py`` validates every example against its request model, so an example
cannot drift from the schema it illustrates.
"""

from __future__ import annotations

from typing import Any

MODEL_ID = "0b5e9c3a-6f1d-4a2e-9c47-2d8f3b1a7e60"
AUDIT_ID = "5f0c2d9e-1b7a-4c3e-8f60-9a2b4d6e8c10"
AFTER_AUDIT_ID = "7a1e3c5b-9d2f-4e6a-8b0c-1d3f5a7b9c20"
DATASET_ID = "c4d8e2f6-3a5b-4c7d-9e1f-2a4b6c8d0e30"

MODEL = {
    "builtin": {"summary": "A model shipped with the engine", "value": {"name": "smol", "source": "builtin:smollm2"}},
    "hub": {
        "summary": "A hub model pinned to a revision",
        "value": {"name": "llama-2-chat", "source": "meta-llama/Llama-2-7b-chat-hf@main"},
    },
}
DATASET = {
    "upload": {
        "summary": "Harmful prompts with refusals, as JSONL",
        "value": {"file": "harmful.jsonl", "name": "harmful", "format": "jsonl"},
    },
}
AUDIT = {
    "defaults": {"summary": "The built-in calibration sets and the paper's settings", "value": {"model_id": MODEL_ID}},
    "custom": {
        "summary": "Wanda scores on an uploaded safety set, a smaller SCU cut",
        "value": {
            "model_id": MODEL_ID,
            "safety_dataset_id": DATASET_ID,
            "method": "wanda",
            "samples": 64,
            "cuts": {"ru": 0.1, "scu": 0.005, "ucu": 0.1},
        },
    },
}
EVALUATION = {
    "baseline": {"summary": "ASR, over-refusal and utility of a model", "value": {"model_id": MODEL_ID}},
    "ablation": {
        "summary": "The same with an audit's safety-critical units removed (the paper's compensation)",
        "value": {"model_id": MODEL_ID, "audit_id": AUDIT_ID, "ablate": ["SCU"], "compensation": "safety"},
    },
    "benchmark": {
        "summary": "A named benchmark, the first 50 prompts",
        "value": {"model_id": MODEL_ID, "harmful_source": "bench:advbench", "samples": 50},
    },
}
FINETUNE = {
    "freeze": {
        "summary": "Fine-tune with the audit's SCU frozen",
        "value": {"model_id": MODEL_ID, "dataset_id": DATASET_ID, "audit_id": AUDIT_ID, "mode": "freeze", "epochs": 1},
    },
    "full": {
        "summary": "Plain fine-tuning, every weight trained",
        "value": {"model_id": MODEL_ID, "dataset_id": DATASET_ID, "mode": "full", "max_steps": 100},
    },
}
PROBE = {
    "direction": {"summary": "Distance curves and the refusal direction", "value": {"model_id": MODEL_ID}},
    "unit_writes": {
        "summary": "Also how much each class of an audit's units writes along the direction",
        "value": {"model_id": MODEL_ID, "audit_id": AUDIT_ID, "ks": [1, 2, 4]},
    },
}
COMPARISON = {
    "before_after": {
        "summary": "Role transfer between an audit before and one after a fine-tune",
        "value": {"before_audit_id": AUDIT_ID, "after_audit_id": AFTER_AUDIT_ID},
    },
}

RETENTION = {
    "ninety_days": {"summary": "Keep finished jobs for 90 days", "value": {"retention_days": 90}},
}
SERIES = {
    "run": {
        "summary": "Every checkpoint of a training run, by step, with the role transfer between them",
        "value": {"labels": {"run": "run7"}, "order_by": "checkpoint_step"},
    },
    "read_only": {
        "summary": "Two registered checkpoints only, queueing no comparison",
        "value": {"labels": {}, "order_by": "checkpoint_step", "model_ids": [MODEL_ID], "compare": False},
    },
}


def request_examples(examples: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    """``openapi_extra`` for a route: named request body examples under ``media_type``."""
    return {"requestBody": {"content": {media_type: {"examples": examples}}}}
