"""Read prompt/response datasets from files, the shipped builtin sets, or the Hugging Face hub.

Every failure is a `DatasetError` whose message names the file, the 1-based line and the
field, so a user can fix their file without reading this code.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from .benchmarks import BENCH_PREFIX, load_benchmark
from .builtin import BUILTIN_PREFIX, builtin_file, builtin_names
from .columns import PROMPT_COLUMNS, RESPONSE_COLUMNS, ColumnMap, hub_table, numbered, read_text, rows_to_examples
from .examples import Dataset, DatasetError, Example

logger = logging.getLogger(__name__)

HF_PREFIX = "hf:"
SUPPORTED_EXTENSIONS = (".csv", ".jsonl", ".json", ".txt")


def load_dataset(
    source: str | os.PathLike[str],
    *,
    limit: int | None = None,
    require_response: bool = False,
) -> Dataset:
    """Load a dataset from `builtin:NAME`, `hf:org/name[:split][?options]`, `bench:NAME[/SUBSET][=PATH]`
    or a .csv/.jsonl/.json/.txt path.

    `limit` keeps the first `limit` examples. With `require_response=True` every example
    must carry a response (calibration and training sets need one); otherwise the error
    names the first record without one.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    source = os.fspath(source)
    if source.startswith(BUILTIN_PREFIX):
        dataset = _load_builtin(source[len(BUILTIN_PREFIX) :], require_response)
    elif source.startswith(HF_PREFIX):
        dataset = _load_hf(source[len(HF_PREFIX) :], require_response)
    elif source.startswith(BENCH_PREFIX):
        dataset = load_benchmark(source, require_response)
    else:
        dataset = _load_path(source, name=source, require_response=require_response)
    dataset = dataset.take(limit)
    logger.debug("loaded %s: %d examples, sha256 %s", dataset.name, len(dataset), dataset.sha256)
    return dataset


# ---------------------------------------------------------------------------- sources


def _load_builtin(name: str, require_response: bool) -> Dataset:
    entry = builtin_file(name)
    if entry is None:
        available = ", ".join(f"{BUILTIN_PREFIX}{n}" for n in builtin_names()) or "none"
        raise DatasetError(f"unknown builtin dataset {name!r}; available: {available}")
    with resources.as_file(entry) as path:
        return _load_path(str(path), name=f"{BUILTIN_PREFIX}{name}", require_response=require_response)


def _load_path(path: str, *, name: str, require_response: bool) -> Dataset:
    p = Path(path)
    if not p.exists():
        raise DatasetError("file not found", path=path)
    if not p.is_file():
        raise DatasetError("not a regular file", path=path)
    suffix = p.suffix.lower()
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".json": _read_json, ".txt": _read_txt}
    reader = readers.get(suffix)
    if reader is None:
        raise DatasetError(
            f"unsupported file extension {p.suffix!r}; expected one of {', '.join(SUPPORTED_EXTENSIONS)}",
            path=path,
        )
    text = read_text(p, path)
    examples = list(reader(text, path, require_response))
    if not examples:
        raise DatasetError("the dataset is empty (no examples found)", path=path)
    return Dataset(name=name, examples=tuple(examples))


def _split_lines(text: str) -> list[str]:
    # Only \n, \r\n and \r end a line; str.splitlines would also split on U+2028 etc.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


# ---------------------------------------------------------------------------- field checks


def _check_prompt(value: Any, path: str, line: int, field: str) -> str:
    if value is None:
        raise DatasetError("missing", path=path, line=line, field=field)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError("must be a non-empty string", path=path, line=line, field=field)
    return value


def _check_response(value: Any, path: str, line: int, field: str, require_response: bool) -> str | None:
    if value is None:
        if require_response:
            raise DatasetError(
                "missing (a response is required for this dataset)",
                path=path,
                line=line,
                field=field,
            )
        return None
    if not isinstance(value, str) or not value.strip():
        raise DatasetError("must be a non-empty string (or absent)", path=path, line=line, field=field)
    return value


def _example_from_record(record: Any, path: str, line: int, require_response: bool) -> Example:
    """One JSON object: {prompt, response?} or Alpaca-style {instruction, input?, output?}."""
    if not isinstance(record, dict):
        raise DatasetError(f"expected a JSON object, got {type(record).__name__}", path=path, line=line)
    if "prompt" not in record and "instruction" in record:
        instruction = _check_prompt(record.get("instruction"), path, line, "instruction")
        extra = record.get("input")
        if extra is not None and not isinstance(extra, str):
            raise DatasetError("must be a string", path=path, line=line, field="input")
        prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        response = _check_response(record.get("output"), path, line, "output", require_response)
        return Example(prompt=prompt, response=response)
    if "prompt" not in record:
        raise DatasetError(
            "missing (expected 'prompt', or Alpaca-style 'instruction')",
            path=path,
            line=line,
            field="prompt",
        )
    prompt = _check_prompt(record["prompt"], path, line, "prompt")
    response = _check_response(record.get("response"), path, line, "response", require_response)
    return Example(prompt=prompt, response=response)


# ---------------------------------------------------------------------------- formats


def _read_jsonl(text: str, path: str, require_response: bool) -> Iterator[Example]:
    for lineno, raw in enumerate(_split_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"invalid JSON ({exc.msg}, column {exc.colno})", path=path, line=lineno) from None
        yield _example_from_record(record, path, lineno, require_response)


def _read_json(text: str, path: str, require_response: bool) -> Iterator[Example]:
    """A JSON list of records; each record's line is where its object starts."""
    decoder = json.JSONDecoder()
    ws = " \t\n\r"

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        return pos

    def bad_json(exc: json.JSONDecodeError) -> DatasetError:
        return DatasetError(f"invalid JSON ({exc.msg}, column {exc.colno})", path=path, line=exc.lineno)

    pos = skip(0)
    if pos >= len(text):
        return
    if text[pos] != "[":
        try:
            value, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise bad_json(exc) from None
        raise DatasetError(
            f"expected a JSON list of records, got {type(value).__name__}",
            path=path,
            line=line_of(pos),
        )
    pos = skip(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        start = pos
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise bad_json(exc) from None
        yield _example_from_record(record, path, line_of(start), require_response)
        pos = skip(pos)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            break
        raise DatasetError("invalid JSON (expected ',' or ']' after a record)", path=path, line=line_of(pos))
    if skip(pos + 1) < len(text):
        raise DatasetError("invalid JSON (extra data after the list)", path=path, line=line_of(skip(pos + 1)))


def _read_txt(text: str, path: str, require_response: bool) -> Iterator[Example]:
    for lineno, raw in enumerate(_split_lines(text), start=1):
        line = raw.strip()
        if not line:
            continue
        if require_response:
            raise DatasetError(
                "missing (plain-text files hold prompts only, but a response is required)",
                path=path,
                line=lineno,
                field="response",
            )
        yield Example(prompt=line)


_CSV_EXPECTED = (
    "'goal,target' (AdvBench), 'Behavior[,ContextString]' (HarmBench), 'forbidden_prompt' (StrongREJECT) "
    "or 'prompt[,response]'"
)


def _read_csv(text: str, path: str, require_response: bool) -> Iterator[Example]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DatasetError(f"invalid CSV ({exc})", path=path, line=1) from None
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    original = {name.strip().lower(): name.strip() for name in header}

    if "goal" in columns:  # AdvBench
        prompt_col, response_col, context_col = "goal", "target", None
    elif "behavior" in columns:  # HarmBench
        prompt_col, response_col, context_col = "behavior", None, "contextstring"
    elif "forbidden_prompt" in columns:  # StrongREJECT
        prompt_col, response_col, context_col = "forbidden_prompt", None, None
    elif "prompt" in columns:
        prompt_col, response_col, context_col = "prompt", "response", None
    else:
        raise DatasetError(
            f"unrecognised CSV header {header!r}; expected columns {_CSV_EXPECTED}",
            path=path,
            line=1,
        )

    def cell(row: list[str], col: str | None) -> str:
        if col is None or col not in columns or columns[col] >= len(row):
            return ""
        return row[columns[col]]

    while True:
        lineno = reader.line_num + 1  # where this row starts (quoted cells may span lines)
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError(f"invalid CSV ({exc})", path=path, line=lineno) from None
        if not any(c.strip() for c in row):
            continue
        prompt_field = original[prompt_col]
        prompt = cell(row, prompt_col)
        if not prompt.strip():
            raise DatasetError("must be a non-empty string", path=path, line=lineno, field=prompt_field)
        context = cell(row, context_col)
        if context.strip():
            prompt = f"{context}\n\n{prompt}"
        response: str | None = cell(row, response_col) or None
        if response is not None and not response.strip():
            response = None
        if response is None and require_response:
            field = original.get(response_col, response_col) if response_col else "response"
            raise DatasetError(
                "missing (a response is required for this dataset)",
                path=path,
                line=lineno,
                field=field,
            )
        yield Example(prompt=prompt, response=response)


HF_OPTIONS = ("config", "revision", "prompt", "response", "id", "category")
_HF_USAGE = "hf:org/name[:split][?config=NAME&revision=REV&prompt=COLUMN&response=COLUMN&id=COLUMN&category=COLUMN]"


def parse_hf(spec: str) -> tuple[str, str, dict[str, str]]:
    """(repo, split, options) of ``org/name[:split][?key=value&...]`` (the part after ``hf:``)."""
    body, _, query = spec.partition("?")
    name, _, split = body.partition(":")
    if not name or "/" not in name or name.startswith("/") or name.endswith("/"):
        raise DatasetError(f"expected {_HF_USAGE}, got {HF_PREFIX + spec!r}")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise DatasetError(f"hf: option {item!r} needs a value (key=value); expected {_HF_USAGE}")
        if key not in HF_OPTIONS:
            raise DatasetError(f"unknown hf: option {key!r}; known: {', '.join(HF_OPTIONS)}")
        if key in options:
            raise DatasetError(f"hf: option {key!r} given twice")
        options[key] = value
    return name, split or "train", options


def _load_hf(spec: str, require_response: bool) -> Dataset:
    """A hub dataset (needs the `datasets` package); columns matched case-insensitively, see `HF_OPTIONS`."""
    name, split, options = parse_hf(spec)
    query = "&".join(f"{key}={options[key]}" for key in HF_OPTIONS if key in options)
    label = f"{HF_PREFIX}{name}:{split}" + (f"?{query}" if query else "")
    named = {key: (options[key],) for key in ("prompt", "response", "id", "category") if key in options}
    column_map = ColumnMap(
        prompt=named.get("prompt", PROMPT_COLUMNS),
        response=named.get("response", RESPONSE_COLUMNS if "prompt" not in named else ()),
        id=named.get("id", ()),
        category=named.get("category", ()),
        explicit=bool(named),
        hint="" if named else " (name it with ?prompt=COLUMN)",
    )
    columns, table = hub_table(
        name, config=options.get("config"), split=split, revision=options.get("revision"), label=label
    )
    resolved = column_map.resolve(columns, label)
    if resolved["prompt"] and resolved["prompt"].lower() == "instruction" and not named:
        column_map = replace(column_map, input=("input",))  # Alpaca-style: instruction + input
    examples = rows_to_examples(numbered(table), columns, column_map, label=label, require_response=require_response)
    return Dataset(name=label, examples=tuple(examples))
