"""Every path starts a sequence with the tokenizer's own BOS, exactly once (issue 13, §3)."""

import pytest
from tokenizers.processors import TemplateProcessing

from ssah_engine.data import Dataset, Example
from ssah_engine.encoding import encode_pair
from ssah_engine.evaluation.generation import encode_rendered, render_prompts
from ssah_engine.evaluation.margin import opening_ids
from ssah_engine.evaluation.perplexity import _windows
from ssah_engine.finetune.batches import StepBatches
from ssah_engine.finetune.config import FinetuneConfig
from ssah_engine.special_tokens import encode_text, leading_special_ids
from ssah_engine.testing import CHATML_TEMPLATE, tiny_tokenizer


def bos_tokenizer(template: str | None):
    """The tiny byte tokenizer, made to prepend its BOS like a Llama tokenizer does."""
    tokenizer = tiny_tokenizer()
    bos = tokenizer.bos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    tokenizer.chat_template = template
    return tokenizer


# A template that writes the BOS itself, as Llama-2's and Llama-3's do.
BOS_CHATML = "{{ bos_token }}" + CHATML_TEMPLATE


def starts_with_one_bos(ids, tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return ids[0] == bos and ids[1] != bos


def test_probe_finds_the_bos_a_tokenizer_adds():
    assert leading_special_ids(bos_tokenizer(None)) == [bos_tokenizer(None).bos_token_id]
    assert leading_special_ids(tiny_tokenizer()) == []  # a GPT-2-style tokenizer adds nothing


@pytest.mark.parametrize("template", [None, CHATML_TEMPLATE, BOS_CHATML], ids=["no-template", "chatml", "bos-chatml"])
def test_scored_ids_begin_with_the_bos_exactly_once(template):
    tokenizer = bos_tokenizer(template)
    pair = encode_pair(tokenizer, "How do I bake bread?", "Knead, rest, bake.")
    assert starts_with_one_bos(pair.input_ids, tokenizer)
    assert tokenizer.bos_token_id not in pair.input_ids[pair.response_start :]  # none mid-sequence


@pytest.mark.parametrize("template", [None, BOS_CHATML], ids=["no-template", "bos-chatml"])
def test_generation_and_margin_prompts_begin_with_the_bos_exactly_once(template):
    tokenizer = bos_tokenizer(template)
    rendered = render_prompts(tokenizer, ["Tell me a joke."], None)
    (ids,) = encode_rendered(tokenizer, rendered)
    assert starts_with_one_bos(ids, tokenizer)
    # The openings are what follows the prompt: no BOS leaks into them.
    openings = opening_ids(tokenizer, rendered[0], ["Sure", "I'm sorry"])
    assert all(tokenizer.bos_token_id not in row for row in openings)


def test_training_batches_begin_with_the_bos_exactly_once():
    tokenizer = bos_tokenizer(None)
    dataset = Dataset("sft", (Example("Name a colour.", "Blue."), Example("Name a fruit.", "A pear.")))
    batches = StepBatches(tokenizer, dataset, FinetuneConfig(batch_size=2, max_length=128))
    assert all(starts_with_one_bos(pair.input_ids, tokenizer) for pair in batches.encoded)


def test_perplexity_scores_every_text_token_after_the_bos():
    tokenizer = bos_tokenizer(None)
    ids = encode_text(tokenizer, "plain text")
    assert starts_with_one_bos(ids, tokenizer)
    ((window, first),) = _windows(ids, 64, 32)
    assert window[0] == tokenizer.bos_token_id and first == 1  # the BOS is context, not a scored token


def test_continuations_and_tokenizers_without_bos_get_none():
    tokenizer = bos_tokenizer(None)
    assert encode_text(tokenizer, "ab", sequence_start=False) == tokenizer("ab", add_special_tokens=False)["input_ids"]
    plain = tiny_tokenizer()
    assert encode_text(plain, "ab") == plain("ab", add_special_tokens=False)["input_ids"]
