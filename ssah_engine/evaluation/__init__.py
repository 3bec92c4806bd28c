"""Safety and utility evaluation under pinned, hashable protocols.

`evaluate(loaded, protocol)` returns everything `ssah eval` writes to evaluation.json: keyword
ASR under named refusal lists with and without a system prompt, over-refusal, the refusal
margin (no generation), optional judge verdicts, perplexity, response loss and lm-eval tasks,
each prompt's record, and the protocol hash that says whether two results are comparable.
"""

from .ablation_spec import AblationSpec
from .compare import compare
from .evaluate import evaluate, load_pinned
from .generation import generate_greedy, generate_greedy_ids
from .intervals import paired_bootstrap, wilson
from .judge import JUDGE_KINDS, Judge, JudgeSpec, load_judge
from .margin import opening_ids, opening_logprobs, refusal_margins
from .perplexity import Perplexity, perplexity
from .protocol import LLAMA2_SYSTEM_PROMPT, PROMPT_FORMATS, DataRef, Protocol, comparable, protocol_hash
from .refusal import RULES, RefusalRule, get_rule

__all__ = [
    "JUDGE_KINDS",
    "LLAMA2_SYSTEM_PROMPT",
    "PROMPT_FORMATS",
    "AblationSpec",
    "paired_bootstrap",
    "wilson",
    "RULES",
    "DataRef",
    "Judge",
    "JudgeSpec",
    "Perplexity",
    "Protocol",
    "RefusalRule",
    "comparable",
    "compare",
    "evaluate",
    "generate_greedy",
    "generate_greedy_ids",
    "get_rule",
    "load_judge",
    "load_pinned",
    "opening_ids",
    "opening_logprobs",
    "perplexity",
    "protocol_hash",
    "refusal_margins",
]
