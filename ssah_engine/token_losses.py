"""Next-token losses at chosen positions, without materialising the full-vocabulary logits.

A plain ``model(...).logits`` holds batch x length x vocabulary floats: 8 x 1024 x 151,936 fp32 is
5 GB for Qwen2, and the cross-entropy copies it twice more. On a CPU that memory traffic, not the
arithmetic, dominated perplexity and response-loss evaluation. Here the decoder runs once, and the
LM head is applied to the hidden states of the scored positions only, a chunk of rows at a time.
Models whose logits are more than ``lm_head(hidden)`` (soft-capping, logit scales) take the plain
path, so the numbers never depend on which path ran.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_TOKENS = 1024  # rows of hidden states sent through the LM head at once (~0.6 GB of fp32 logits for Qwen2)

# Config attributes that, when set, mean the logits are transformed after the LM head.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _head_only_logits(model) -> bool:
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return False
    try:
        decoder = model.get_decoder()
    except (AttributeError, ValueError, NotImplementedError):
        return False
    return decoder is not None and decoder is not model and model.get_output_embeddings() is not None


def next_token_losses(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, scored: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy (nats, fp32) of token t+1 given tokens ..t, for every t+1 where ``scored`` is true.

    ``scored`` has the shape of ``input_ids``; position 0 cannot be scored and is ignored. Returns a
    1-D tensor in row-major order of the scored positions.
    """
    targets_scored = scored[:, 1:]
    targets = input_ids[:, 1:][targets_scored]
    if not _head_only_logits(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return F.cross_entropy(logits[:, :-1][targets_scored].float(), targets, reduction="none")
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]
    hidden = hidden[:, :-1][targets_scored]  # the state before each scored token
    head = model.get_output_embeddings()
    losses = [
        F.cross_entropy(
            head(hidden[start : start + CHUNK_TOKENS]).float(), targets[start : start + CHUNK_TOKENS], reduction="none"
        )
        for start in range(0, hidden.shape[0], CHUNK_TOKENS)
    ]
    return torch.cat(losses) if losses else hidden.new_zeros(0)
