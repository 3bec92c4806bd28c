"""Rendering prompts for one condition (with or without the safety system prompt), honestly.

Three formats: ``chat`` applies the model's chat template (what a deployment sends); ``no_inst`` is the
text the SSAH paper's Table 1 was measured on, with no template at all; ``raw`` sends the prompt as given.

Some chat templates insert a default system message when none is given (SmolLM2's does), and
some refuse a system message (Gemma's). The rendered text is what counts, so it is kept with
every record, and `describe_template` reports what "no system prompt" really sent.
"""

from __future__ import annotations

from ..encoding import prompt_text

_MARKER = "\u2063SSAH-SYSTEM-MARKER\u2063"


def no_inst_text(prompt: str, system_prompt: str | None) -> str:
    """The paper's template-free text: Llama-2's system block (when a system prompt is sent), the prompt, a newline."""
    if system_prompt:
        return f"<<SYS>>\n{system_prompt}\n<</SYS>>\n\n{prompt}\n"
    return f"{prompt}\n"


def render(tokenizer, prompt: str, system_prompt: str | None, prompt_format: str = "chat") -> str:
    """The text sent for ``prompt`` in ``prompt_format``; in chat, a system prompt the template refuses goes first."""
    if prompt_format == "no_inst":
        return no_inst_text(prompt, system_prompt)
    if prompt_format == "raw":
        return f"{system_prompt}\n\n{prompt}" if system_prompt else prompt
    if prompt_format != "chat":
        raise ValueError(f"unknown prompt format {prompt_format!r}")
    try:
        return prompt_text(tokenizer, prompt, system_prompt)
    except Exception:  # jinja raises TemplateError (or a plain exception) for an unsupported system role
        if not system_prompt:
            raise
        return prompt_text(tokenizer, f"{system_prompt}\n\n{prompt}", None)


def describe_template(tokenizer) -> dict:
    """Whether the template takes a system message, and the default one it inserts when none is given."""
    probe = "How are you?"
    plain = prompt_text(tokenizer, probe, None)
    try:
        with_marker = prompt_text(tokenizer, probe, _MARKER)
    except Exception:
        return {"system_role": False, "default_system_text": None, "no_system_example": plain}
    if _MARKER not in with_marker:
        return {"system_role": False, "default_system_text": None, "no_system_example": plain}
    before, after = with_marker.split(_MARKER, 1)
    inserted = None
    if plain.startswith(before) and plain.endswith(after) and len(plain) > len(before) + len(after):
        inserted = plain[len(before) : len(plain) - len(after)]
    return {"system_role": True, "default_system_text": inserted, "no_system_example": plain}
