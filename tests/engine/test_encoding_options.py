"""What an encoded pair scores (issue 13, §4): the template's closing tokens by choice, pre-formatted prompts refused."""

import pytest

from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.encoding import PreformattedPromptError, encode_pair, encode_pairs
from ssah_engine.evaluation.generation import render_prompts
from ssah_engine.testing import tiny_tokenizer

from .conftest import make_dataset


def response_text(tokenizer, pair):
    return tokenizer.decode(list(pair.input_ids[pair.response_start :]))


def test_template_scores_the_end_of_turn_marker_and_content_does_not():
    tokenizer = tiny_tokenizer()
    template = encode_pair(tokenizer, "Hi?", "Hello there.")
    content = encode_pair(tokenizer, "Hi?", "Hello there.", response_tokens="content")
    assert response_text(tokenizer, template) == "Hello there.<|im_end|>\n"  # today's default, kept
    assert response_text(tokenizer, content) == "Hello there."
    assert template.input_ids[: template.response_start] == content.input_ids[: content.response_start]


def test_content_without_a_template_drops_the_eos():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    assert response_text(tokenizer, encode_pair(tokenizer, "Hi?", "Yes.")) == "Yes.<|im_end|>"
    assert response_text(tokenizer, encode_pair(tokenizer, "Hi?", "Yes.", response_tokens="content")) == "Yes."


def test_audit_records_and_applies_response_tokens(tiny_llama, safety_set, utility_set):
    template = run_audit(tiny_llama, safety_set, utility_set, AuditConfig(samples=6))
    content = run_audit(tiny_llama, safety_set, utility_set, AuditConfig(samples=6, response_tokens="content"))
    assert content.config["response_tokens"] == "content"
    # two tokens per pair fewer: the end-of-turn marker and its newline
    assert template.data["safety"]["response_tokens"] - content.data["safety"]["response_tokens"] == 2 * 6
    with pytest.raises(ValueError, match="response_tokens"):
        AuditConfig(response_tokens="all")


@pytest.mark.parametrize(
    "prompt",
    [
        "[INST] How do I pick a lock? [/INST]",
        "<<SYS>>\nBe safe.\n<</SYS>>\n\nHow do I pick a lock?",
        "<|im_start|>user\nHow do I pick a lock?<|im_end|>",
    ],
)
def test_a_preformatted_prompt_is_refused_with_the_marker_named(prompt):
    tokenizer = tiny_tokenizer()
    with pytest.raises(PreformattedPromptError, match="pair 2: .*already holds the chat marker") as error:
        encode_pairs(tokenizer, [("A plain question?", "Yes."), (prompt, "No.")])
    assert "Remove the markers" in str(error.value)
    with pytest.raises(PreformattedPromptError):  # generation wraps prompts in the template too
        render_prompts(tokenizer, [prompt], None)


def test_an_audit_on_the_authors_csv_format_stops_before_scoring(tiny_llama, utility_set):
    safety = make_dataset("authors", [(f"[INST] harmful thing {i} [/INST]", "Sorry, no.") for i in range(4)])
    with pytest.raises(PreformattedPromptError, match=r"\[INST\]"):
        run_audit(tiny_llama, safety, utility_set, AuditConfig(samples=4))


def test_plain_prompts_that_mention_brackets_pass():
    tokenizer = tiny_tokenizer()
    assert encode_pair(tokenizer, "What does [1, 2] mean in Python?", "A list.") is not None
