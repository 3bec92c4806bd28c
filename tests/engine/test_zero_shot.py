"""The lm-eval path runs for real: a local five-question multiple-choice task on a tiny model (issue 13, §6)."""

import json

import torch

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
"""


def direct_accuracy(model, tokenizer) -> float:
    """Accuracy by hand: the choice whose tokens (after a space) are likeliest after the question."""
    correct = 0
    for question, choices, answer in QUESTIONS:
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
        correct += int(max(range(len(choices)), key=scores.__getitem__) == answer)
    return correct / len(QUESTIONS)


def test_a_local_lm_eval_task_gives_the_accuracy_computed_by_hand(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "ssah_tiny_mc.yaml").write_text(TASK_YAML.format(data=data))
    model, tokenizer = tiny_model("llama")
    result = zero_shot(model, tokenizer, ["ssah_tiny_mc"], limit=None, batch_size=2, include_path=str(tasks))
    assert result["status"] == "ok", result
    assert result["lm_eval_version"]
    measured = result["tasks"]["ssah_tiny_mc"]
    assert abs(measured["acc,none"] - direct_accuracy(model, tokenizer)) < 1e-9
