"""Which judge labels (prompt, response) pairs, and how: torch-free, so the API derives its schema from it.

Kinds: ``sequence`` (a sequence classifier), ``llama-guard`` (Llama Guard 1/2/3 and 3-1B: the
conversation through the judge's own chat template, a few greedy tokens parsed as ``safe`` /
``unsafe`` plus category codes; ``causal`` is the old name, accepted and stored as ``llama-guard``),
``harmbench`` (a yes/no classifier prompt: is the response an instance of the behaviour?) and
``strongreject`` (a rubric: refusal, convincingness, specificity). A judge runs in-process from a
hub id or directory, or, with ``base_url``, on any OpenAI-compatible endpoint (vLLM, llama.cpp's
server, a hosted API). The spec holds the *name* of the environment variable with the endpoint's
key, never the key: the front end reads it and hands it to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

JUDGE_KINDS = ("sequence", "llama-guard", "harmbench", "strongreject")
KIND_ALIASES = {"causal": "llama-guard"}  # the name the LlamaGuard-style kind had before protocol judges were parsed
JUDGE_DTYPES = ("auto", "float32", "bfloat16", "float16")
# Greedy tokens per verdict when max_new_tokens is 0: a Llama Guard verdict with categories is about 10
# tokens ("\n\nunsafe\nS1,S10"), a yes/no answer 1-2, the rubric's reasoning and scores a few hundred.
DEFAULT_NEW_TOKENS = {"sequence": 0, "llama-guard": 20, "harmbench": 4, "strongreject": 512}
# Settings that decide how a judge is reached, not what it answers: left out of the protocol hash.
TRANSPORT_SETTINGS = ("api_key_env", "timeout_s", "max_retries", "requests_per_second", "device_map")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass(frozen=True)
class JudgeSpec:
    """A judge model, the prompt it gets and how it is reached; every field but the transport ones is hashed."""

    source: str = field(
        default="",
        metadata=_help("hub id or local directory of the judge; with base_url, the model name the endpoint serves"),
    )
    kind: str = field(
        default="sequence",
        metadata=_help(
            "sequence, llama-guard (Llama Guard 1/2/3; 'causal' is an alias), harmbench (yes/no classifier) "
            "or strongreject (rubric)",
            choices=JUDGE_KINDS,
        ),
    )
    revision: str = field(
        default="",
        metadata=_help("hub revision (branch, tag or commit) to load; a 40-hex commit must match what loads"),
    )
    config_sha256: str = field(
        default="",
        metadata=_help("sha256 of the judge's config.json; when set, a judge that hashes otherwise is refused"),
    )
    base_url: str = field(
        default="",
        metadata=_help(
            "an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; empty: the judge runs in-process"
        ),
    )
    api_key_env: str = field(
        default="",
        metadata=_help("name of the environment variable holding the endpoint's key (the key is never stored)"),
    )
    prompt_template: str = field(
        default="",
        metadata=_help(
            "harmbench/strongreject prompt with {prompt} and {response}; empty: the built-in one (hashed either way)"
        ),
    )
    unsafe_labels: tuple[str, ...] = field(
        default=("unsafe", "harmful", "LABEL_1"), metadata=_help("sequence judges: labels that mean unsafe")
    )
    max_length: int = field(default=1024, metadata=_help("judge input tokens (in-process judges)", ge=1))
    max_new_tokens: int = field(
        default=0, metadata=_help("greedy tokens per verdict; 0: the kind's default (20, 4 or 512)", ge=0)
    )
    dtype: str = field(
        default="auto",
        metadata=_help("in-process weights: auto (bfloat16 on CUDA, float32 on CPU) or a dtype", choices=JUDGE_DTYPES),
    )
    device_map: str | None = field(
        default=None,
        metadata=_help(
            "passed to from_pretrained (e.g. auto: spread over the GPUs); None: the evaluated model's device"
        ),
    )
    timeout_s: float = field(default=60.0, metadata=_help("endpoint: seconds per request", gt=0))
    max_retries: int = field(
        default=4, metadata=_help("endpoint: retries on 429, 5xx and connection errors, with backoff", ge=0, le=20)
    )
    requests_per_second: float = field(default=0.0, metadata=_help("endpoint: request rate cap; 0: none", ge=0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", KIND_ALIASES.get(self.kind, self.kind))
        object.__setattr__(self, "unsafe_labels", tuple(self.unsafe_labels))
        if self.kind not in JUDGE_KINDS:
            raise ValueError(f"judge kind must be one of {', '.join(JUDGE_KINDS)} (or causal), got {self.kind!r}")
        if not self.source:
            raise ValueError("judge source must name a hub id or a directory (with base_url: the served model name)")
        if self.dtype not in JUDGE_DTYPES:
            raise ValueError(f"judge dtype must be one of {', '.join(JUDGE_DTYPES)}, got {self.dtype!r}")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url must be an http:// or https:// URL, got {self.base_url!r}")
        if self.base_url and self.kind == "sequence":
            raise ValueError("a sequence-classifier judge runs in-process only; an endpoint judge needs another kind")
        if self.api_key_env and not self.api_key_env.replace("_", "").isalnum():
            raise ValueError(
                f"api_key_env names an environment variable (letters, digits, _), got {self.api_key_env!r}"
            )
        if self.prompt_template:
            if self.kind not in ("harmbench", "strongreject"):
                raise ValueError("prompt_template applies to harmbench and strongreject judges only")
            missing = [name for name in ("{prompt}", "{response}") if name not in self.prompt_template]
            if missing:
                raise ValueError(f"prompt_template lacks {' and '.join(missing)}")
        for name in ("max_length", "max_retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "max_length" else 0):
                raise ValueError(f"judge {name} must be a {'positive' if name == 'max_length' else 'non-negative'} int")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"judge max_new_tokens must be an int >= 0, got {self.max_new_tokens!r}")
        if self.timeout_s <= 0 or self.requests_per_second < 0:
            raise ValueError("judge timeout_s must be > 0 and requests_per_second >= 0")

    @property
    def new_tokens(self) -> int:
        """Greedy tokens per verdict: ``max_new_tokens``, or the kind's default."""
        return self.max_new_tokens or DEFAULT_NEW_TOKENS[self.kind]

    @property
    def remote(self) -> bool:
        return bool(self.base_url)

    @classmethod
    def from_dict(cls, data: dict | str) -> JudgeSpec:
        """A spec from ``asdict`` output (missing settings keep their defaults) or a bare source."""
        if isinstance(data, str):
            return cls(data)
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown judge settings: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)
