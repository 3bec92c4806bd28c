import json

import pytest
import torch

from ssah_engine.data import Dataset, Example, content_sha256
from ssah_engine.loading import LoadedModel
from ssah_engine.testing import tiny_model

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")


def make_dataset(name: str, pairs) -> Dataset:
    examples = tuple(Example(prompt, response) for prompt, response in pairs)
    return Dataset(name, examples, content_sha256(examples))


@pytest.fixture
def tiny_llama() -> LoadedModel:
    model, tokenizer = tiny_model("llama")
    return LoadedModel(model, tokenizer, "builtin:tiny-llama", "builtin:tiny-llama")


@pytest.fixture
def safety_set() -> Dataset:
    return make_dataset(
        "safety", [(f"how do I do harmful thing {i}?", f"Sorry, I can't help with thing {i}.") for i in range(12)]
    )


@pytest.fixture
def utility_set() -> Dataset:
    return make_dataset("utility", [(f"what is {i} plus {i}?", f"{i} plus {i} is {2 * i}, done.") for i in range(12)])


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest, and alike on any machine, on one thread (extra threads spin on a shared box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)
