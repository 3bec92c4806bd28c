"""Tiny random models of every supported family, for tests and smoke runs without a download.

``builtin:tiny-<family>`` loads one of these; the tokenizer is byte-level and carries a
ChatML template, so chat formatting, masking and generation all run the real code paths.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from .architectures import supported_families

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SHAPE = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
)
_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "phi3": "phi3",
}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + 3 specials) with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_vocab = {char: index for index, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for offset, token in enumerate(SPECIAL_TOKENS):
        byte_vocab[token] = 256 + offset
    backend = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(family: str = "llama", *, seed: int = 0, num_layers: int = 2):
    """Return ``(model, tokenizer)``: a randomly initialised model of ``family`` in float32."""
    if family not in _MODEL_TYPES:
        raise ValueError(f"no tiny model for {family!r}; families: {', '.join(supported_families())}")
    tokenizer = tiny_tokenizer()
    extra = {}
    if family in ("gemma2", "gemma3"):
        extra = dict(query_pre_attn_scalar=8, sliding_window=16)
    if family == "phi3":
        extra = dict(pad_token_id=tokenizer.pad_token_id)
    config = AutoConfig.for_model(
        _MODEL_TYPES[family],
        **{**_SHAPE, "num_hidden_layers": num_layers},
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **extra,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer
