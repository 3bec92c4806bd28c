"""The LM head applied to scored positions only gives the losses of the full-logits path."""

import pytest
import torch
import torch.nn.functional as F

from ssah_engine import token_losses
from ssah_engine.testing import supported_families, tiny_model


def _full_logits_losses(model, input_ids, attention_mask, scored):
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")
    return losses[scored[:, 1:]]


def _padded_batch(vocab: int):
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, vocab - 3, (3, 21), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 15:] = 0  # a right-padded row
    scored = attention_mask.bool().clone()
    scored[2, :9] = False  # a prompt that is not scored
    return input_ids, attention_mask, scored


@pytest.mark.parametrize("family", supported_families())
@torch.inference_mode()
def test_head_on_scored_positions_equals_full_logits(family, monkeypatch):
    model, tokenizer = tiny_model(family)
    batch = _padded_batch(len(tokenizer))
    monkeypatch.setattr(token_losses, "CHUNK_TOKENS", 7)  # several chunks, the last one short
    got = token_losses.next_token_losses(model, *batch)
    want = _full_logits_losses(model, *batch)
    assert got.shape == want.shape == (int(batch[2][:, 1:].sum()),)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_soft_capped_logits_take_the_full_path():
    model, tokenizer = tiny_model("gemma2")
    assert model.config.final_logit_softcapping  # gemma2 caps its logits: lm_head(hidden) alone would be wrong
    assert not token_losses._head_only_logits(model)
    llama, _ = tiny_model("llama")
    assert token_losses._head_only_logits(llama)
