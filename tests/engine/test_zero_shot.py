"""The lm-eval path runs for real, offline: a local five-question multiple-choice task (a YAML task reading a
local JSONL file) on a tiny model, checked against the model's own log-likelihoods (issues 13 and 19)."""

import json

import pytest
import torch

from ssah_engine.evaluation import zero_shot as zero_shot_module
from ssah_engine.evaluation.zero_shot import zero_shot
from ssah_engine.testing import tiny_model

QUESTIONS = [
    ("The sky is", ["blue", "loud", "square"], 0),
    ("Two plus two is", ["three", "four"], 1),
    ("Fire is", ["cold", "wet", "hot"], 2),
    ("A cat says", ["meow", "moo"], 0),
    ("Ice is", ["warm", "frozen water"], 1),
]

TASK_YAML = """task: ssah_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
metadata:
  version: 3.0
"""


def choice_logprobs(model, tokenizer) -> list[list[float]]:
    """Per question, each choice's log-likelihood after the question (its tokens after a space), by hand."""
    out = []
    for question, choices, _ in QUESTIONS:
        context = tokenizer(question, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in choices:
            ids = tokenizer(question + " " + choice, add_special_tokens=False)["input_ids"]
            assert ids[: len(context)] == context  # byte tokens: the split is clean
            with torch.no_grad():
                logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            scores.append(
                sum(float(logprobs[position - 1, ids[position]]) for position in range(len(context), len(ids)))
            )
        out.append(scores)
    return out


def direct_accuracy(model, tokenizer, count: int = len(QUESTIONS)) -> float:
    """Accuracy by hand over the first ``count`` questions: the likeliest choice against the answer."""
    scores = choice_logprobs(model, tokenizer)[:count]
    hits = [max(range(len(s)), key=s.__getitem__) == q[2] for s, q in zip(scores, QUESTIONS)]
    return sum(hits) / count


@pytest.fixture
def local_task(tmp_path, monkeypatch) -> str:
    """The task folder; the hub and the datasets library offline, as on a machine without network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)  # read at import: set the constants too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "ssah_tiny_mc.yaml").write_text(TASK_YAML.format(data=data))
    return str(tasks)


def test_a_local_lm_eval_task_gives_the_accuracy_computed_by_hand(local_task):
    model, tokenizer = tiny_model("llama")
    result = zero_shot(model, tokenizer, ["ssah_tiny_mc"], limit=None, batch_size=2, include_path=local_task)
    assert result["status"] == "ok", result
    assert result["lm_eval_version"]
    measured = result["tasks"]["ssah_tiny_mc"]
    expected = direct_accuracy(model, tokenizer)
    assert abs(measured["acc,none"] - expected) < 1e-9
    assert 0 < expected < 1  # a task the model neither always passes nor always fails: a wrong reading shows
    info = result["task_info"]["ssah_tiny_mc"]
    assert (info["version"], info["num_fewshot"]) == (3.0, 0)
    assert info["n_samples"] == {"original": 5, "effective": 5} and len(info["config_sha256"]) == 64
    # per-sample results: each choice's log-likelihood as computed by hand, and the sample's own acc
    samples = sorted(result["samples"]["ssah_tiny_mc"], key=lambda s: s["doc_id"])
    by_hand = choice_logprobs(model, tokenizer)
    assert [s["doc_id"] for s in samples] == list(range(5))
    for sample, scores, (question, choices, answer) in zip(samples, by_hand, QUESTIONS):
        assert [r[0] for r in sample["filtered_resps"]] == pytest.approx(scores, abs=1e-4)
        assert sample["arguments"][0] == [question, " " + choices[0]] and sample["target"] == answer
        assert sample["metrics"] == {"acc": float(max(range(len(scores)), key=scores.__getitem__) == answer)}
        assert len(sample["doc_hash"]) == 64 and "doc" not in sample and "resps" not in sample
    json.dumps(result, allow_nan=False)  # stored in evaluation.json and the database: plain JSON only


def test_limit_and_few_shot_are_applied_and_kept(local_task):
    model, tokenizer = tiny_model("llama")
    result = zero_shot(
        model, tokenizer, ["ssah_tiny_mc"], limit=3, batch_size=2, num_fewshot=1, include_path=local_task
    )
    assert result["status"] == "ok", result
    assert (result["limit"], result["num_fewshot"]) == (3, 1)
    info = result["task_info"]["ssah_tiny_mc"]
    assert info["num_fewshot"] == 1 and info["n_samples"] == {"original": 5, "effective": 3}
    samples = result["samples"]["ssah_tiny_mc"]
    assert len(samples) == 3
    for sample in samples:
        context = sample["arguments"][0][0]
        question = QUESTIONS[sample["doc_id"]][0]
        assert context.endswith(question) and context != question  # one solved example before the question
        assert "\n\n" in context


def test_a_local_task_does_not_build_lm_evals_own_index(local_task, monkeypatch):
    built = []
    real = zero_shot_module._task_manager.__wrapped__

    def recording(include_path, include_defaults=True):
        built.append(include_defaults)
        return real(include_path, include_defaults)

    monkeypatch.setattr(zero_shot_module, "_task_manager", recording)
    index = zero_shot_module._tasks_index(["ssah_tiny_mc"], local_task)
    assert index.all_tasks == ["ssah_tiny_mc"] and built == [False]
