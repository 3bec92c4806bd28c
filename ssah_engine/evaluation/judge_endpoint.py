"""A judge on an OpenAI-compatible endpoint (vLLM, llama.cpp's server, a hosted API), standard library only.

Llama Guard and StrongREJECT go to ``/chat/completions`` (the server applies the judge's chat template
to the conversation; the rubric is one user message); HarmBench goes to ``/completions`` with the
classifier's own ``[INST]`` text, which a chat endpoint would wrap a second time. Decoding is greedy
(temperature 0). Each request has a timeout; 429, 5xx and connection errors are retried with
exponential backoff (``Retry-After`` honoured); requests are spaced to ``requests_per_second``.
The key comes in as an argument: the engine never reads the environment, and the spec holds only
the variable's name.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from ..judge_spec import JudgeSpec
from .judge_prompts import VERDICT_WORDS, fill, parse_answer, template_of, template_sha256

logger = logging.getLogger(__name__)

BACKOFF_SECONDS = 1.0  # first retry wait without Retry-After; doubled each attempt
MAX_WAIT_SECONDS = 60.0
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class JudgeEndpointError(RuntimeError):
    """The endpoint failed for good: a non-retryable status, or retries used up. The message says which."""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class EndpointJudge:
    """Sends one request per verdict; ``sleep`` and ``clock`` are injectable so tests need not wait."""

    def __init__(
        self,
        spec: JudgeSpec,
        *,
        api_key: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if spec.api_key_env and not api_key:
            raise ValueError(f"judge endpoint {spec.base_url}: set the environment variable {spec.api_key_env}")
        self.spec, self._key, self._sleep, self._clock = spec, api_key, sleep, clock
        self.base_url = spec.base_url.rstrip("/")
        self._last_request: float | None = None
        self.fingerprints: set[str] = set()
        self.requests = 0
        self.retries = 0

    # ---------------------------------------------------------------- HTTP

    def _pace(self) -> None:
        if self.spec.requests_per_second <= 0:
            return
        now = self._clock()
        if self._last_request is not None:
            wait = self._last_request + 1.0 / self.spec.requests_per_second - now
            if wait > 0:
                self._sleep(wait)
                now += wait
        self._last_request = now

    def _request(self, path: str, body: dict | None = None) -> dict:
        """GET (no body) or POST JSON to ``path``; retried on 429/5xx/connection errors, then a clear error."""
        url = f"{self.base_url}/{path}"
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode("utf-8"), "application/json"
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                self.retries += 1
            self._pace()
            self.requests += 1
            wait = None
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
                with urllib.request.urlopen(request, timeout=self.spec.timeout_s) as response:  # noqa: S310 (http/https checked)
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as error:
                detail = error.read(500).decode("utf-8", "replace")
                last = f"HTTP {error.code}: {detail}"
                if error.code not in RETRYABLE:
                    hint = f" (check the key in ${self.spec.api_key_env})" if error.code in (401, 403) else ""
                    raise JudgeEndpointError(f"judge endpoint {url} answered {last}{hint}") from None
                wait = _retry_after(error.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                last = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            except json.JSONDecodeError as error:
                raise JudgeEndpointError(f"judge endpoint {url} answered something not JSON: {error}") from None
            if attempt < self.spec.max_retries:
                wait = min(wait if wait is not None else BACKOFF_SECONDS * 2**attempt, MAX_WAIT_SECONDS)
                logger.info("judge endpoint %s: %s; retry %d in %.1fs", url, last, attempt + 1, wait)
                self._sleep(wait)
        raise JudgeEndpointError(
            f"judge endpoint {url} failed {self.spec.max_retries + 1} times (last: {last}); "
            f"check that the server runs and serves {self.spec.source!r}"
        )

    # ---------------------------------------------------------------- identity and verdicts

    def identity(self) -> dict:
        """What the endpoint says it serves (``GET /models``); a server without that route is recorded, not fatal."""
        served = None
        try:
            listing = self._request("models")
            served = next((entry for entry in listing.get("data", []) if entry.get("id") == self.spec.source), None)
            if served is None:
                names = [entry.get("id") for entry in listing.get("data", [])]
                raise ValueError(
                    f"judge endpoint {self.base_url} does not serve {self.spec.source!r}; it serves {names}"
                )
        except JudgeEndpointError as error:
            served = {"error": str(error)}
        return {
            "source": self.spec.source,
            "kind": self.spec.kind,
            "base_url": self.base_url,
            "served_model": served,
            "prompt_template_sha256": template_sha256(self.spec.kind, self.spec.prompt_template),
            "max_new_tokens": self.spec.new_tokens,
        }

    def usage(self) -> dict:
        """What the verdicts cost and which server builds answered (``system_fingerprint``), for the identity."""
        return {"requests": self.requests, "retries": self.retries, "system_fingerprints": sorted(self.fingerprints)}

    def verdict(self, prompt: str, response: str) -> dict:
        kind, spec = self.spec.kind, self.spec
        words = VERDICT_WORDS.get(kind)
        body: dict = {"model": spec.source, "max_tokens": spec.new_tokens, "temperature": 0}
        template = template_of(kind, spec.prompt_template)
        if kind == "harmbench":
            body |= {"prompt": fill(template or "", prompt, response), "logprobs": 5}
            path = "completions"
        else:
            if kind == "llama-guard":
                messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            else:
                messages = [{"role": "user", "content": fill(template or "", prompt, response)}]
            body["messages"] = messages
            if words:
                body |= {"logprobs": True, "top_logprobs": 5}
            path = "chat/completions"
        answer = self._request(path, body)
        if answer.get("system_fingerprint"):
            self.fingerprints.add(answer["system_fingerprint"])
        try:
            choice = answer["choices"][0]
            text = choice["text"] if kind == "harmbench" else choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return {"unsafe": None, "label": None, "score": None, "raw": None, "parse_error": f"no answer in {answer}"}
        verdict = {"label": None, "score": None, **parse_answer(kind, text or ""), "raw": text}
        if words:
            probability = _word_probability(choice.get("logprobs"), words)
            verdict["score"] = probability
            verdict["p_unsafe" if kind == "llama-guard" else "p_yes"] = probability
        return verdict


def _word_probability(logprobs: dict | None, words: tuple[str, str]) -> float | None:
    """P(positive word) against P(negative word) among the top alternatives of the first non-blank answer token.

    Reads both the chat shape (``content: [{token, top_logprobs: [{token, logprob}]}]``) and the completions
    shape (``tokens: [...], top_logprobs: [{token: logprob}]``); None when the server sent none.
    """
    if not logprobs:
        return None
    if isinstance(logprobs.get("content"), list):
        steps = [
            (entry.get("token", ""), {alt["token"]: alt["logprob"] for alt in entry.get("top_logprobs") or []})
            for entry in logprobs["content"]
        ]
    else:
        steps = list(zip(logprobs.get("tokens") or [], logprobs.get("top_logprobs") or []))
    for token, alternatives in steps:
        if not token.strip():
            continue
        mass = [0.0, 0.0]
        for text, logprob in (alternatives or {}).items():
            piece = text.strip().lower()
            for index, word in enumerate(words):
                if piece and word.startswith(piece) and not words[1 - index].startswith(piece):
                    mass[index] += math.exp(logprob)
        total = mass[0] + mass[1]
        return round(mass[1] / total, 6) if total > 0 else None
    return None
