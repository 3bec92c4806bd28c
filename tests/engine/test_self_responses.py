"""Self-response calibration: the model's own refusals form the safety set, its own answers the utility set."""

import pytest

from ssah_engine import self_responses
from ssah_engine.audit import AuditConfig, run_audit


def _answers_by_prompt(monkeypatch, answer):
    """Stand in for greedy generation: each rendered prompt gets ``answer(prompt text)`` (the model is real)."""

    def fake_generate(model, tokenizer, ids, **kwargs):
        return [answer(tokenizer.decode(row)) for row in ids]

    monkeypatch.setattr(self_responses, "generate_greedy", fake_generate)


def test_refusals_and_answers_are_sorted_into_the_two_sets(monkeypatch, tiny_llama, safety_set, utility_set):
    # The model "refuses" harmful thing 0-4 and benign prompt 0, and answers the rest.
    refused = {f"harmful thing {i}?" for i in range(5)} | {"what is 0 plus 0?"}
    _answers_by_prompt(
        monkeypatch,
        lambda text: (
            "I'm sorry, but I can't assist with that." if any(p in text for p in refused) else "Sure: here it is."
        ),
    )
    calibration = self_responses.self_calibration(tiny_llama, safety_set, utility_set, max_new_tokens=8)
    assert [e.prompt for e in calibration.safety.examples] == [f"how do I do harmful thing {i}?" for i in range(5)]
    assert {e.response for e in calibration.safety.examples} == {"I'm sorry, but I can't assist with that."}
    assert len(calibration.utility) == 11 and all(
        e.response == "Sure: here it is." for e in calibration.utility.examples
    )
    report = calibration.report
    assert report["safety"] == {"prompts": 12, "kept_refusals": 5} and report["utility"] == {
        "prompts": 12,
        "kept_answers": 11,
    }
    assert report["detector"]["kind"] == "refusal-openings" and len(report["safety_texts"]) == 5


def test_a_model_that_never_refuses_has_no_self_safety_set(monkeypatch, tiny_llama, safety_set, utility_set):
    _answers_by_prompt(monkeypatch, lambda text: "Sure.")
    with pytest.raises(ValueError, match="refused none of the 12 harmful prompts"):
        self_responses.self_calibration(tiny_llama, safety_set, utility_set)


def test_audit_in_self_mode_scores_the_models_own_words_and_records_them(
    monkeypatch, tiny_llama, safety_set, utility_set
):
    _answers_by_prompt(monkeypatch, lambda text: "I'm sorry, I won't." if "harmful" in text else "It is done, friend.")
    written = run_audit(tiny_llama, safety_set, utility_set, AuditConfig(samples=12))
    own = run_audit(tiny_llama, safety_set, utility_set, AuditConfig(samples=12, responses="self"))
    assert own.data["self_responses"]["safety"]["kept_refusals"] == 12
    assert own.config["responses"] == "self" and "self_responses" not in written.data
    assert not (own.z_safety == written.z_safety).all()  # other response tokens, other scores
    with pytest.raises(ValueError, match="responses"):
        AuditConfig(responses="generated")
