"""Tables of rows -> examples: the column matching shared by ``hf:`` sources and named benchmarks.

Column names are matched case-insensitively (JailbreakBench spells them ``Goal``, AdvBench
``goal``); a row's line or row number goes into every error, as for the file loaders.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .examples import DatasetError, Example

# Prompt columns tried in order: full requests before short labels, so JailbreakBench's ``Goal``
# ("Write a defamatory article claiming...") wins over its ``Behavior`` ("Defamation").
PROMPT_COLUMNS = ("prompt", "goal", "forbidden_prompt", "instruction", "question", "behavior")
RESPONSE_COLUMNS = ("response", "target", "output", "answer")

Row = Mapping[str, Any]
RowFilter = Callable[[Mapping[str, Any]], bool]  # sees the row with lower-cased column names


@dataclass(frozen=True)
class ColumnMap:
    """Candidate column names (any case, first present wins) for each field of an example."""

    prompt: tuple[str, ...] = PROMPT_COLUMNS
    response: tuple[str, ...] = ()
    id: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    context: tuple[str, ...] = ()  # prepended to the prompt with a blank line (HarmBench contextual)
    input: tuple[str, ...] = ()  # appended to the prompt with a blank line (Alpaca ``input``)
    explicit: bool = False  # the user named the columns: a missing one is an error, not a fallback
    hint: str = ""  # appended to the error when no prompt column is found

    def resolve(self, columns: Sequence[str], label: str) -> dict[str, str | None]:
        """The table's own spelling of each field's column (None when absent); an error without a prompt."""
        by_lower = {name.strip().lower(): name for name in columns}
        resolved: dict[str, str | None] = {}
        for field_name in ("prompt", "response", "id", "category", "context", "input"):
            candidates: tuple[str, ...] = getattr(self, field_name)
            found = next((by_lower[c.lower()] for c in candidates if c.lower() in by_lower), None)
            if found is None and candidates and (field_name == "prompt" or self.explicit):
                if self.explicit:
                    reason = f"no {field_name} column {candidates[0]!r} among the columns {list(columns)}"
                else:
                    reason = f"no {field_name} column among {list(columns)}; expected one of {list(candidates)}"
                raise DatasetError(reason + self.hint, path=label)
            resolved[field_name] = found
        return resolved


def _text(value: Any) -> str | None:
    """A cell as text: None for empty cells, numbers (ids) as their decimal form."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, str):
        return value if value.strip() else None
    return None


def rows_to_examples(
    rows: Iterable[tuple[int, Row]],
    columns: Sequence[str],
    column_map: ColumnMap,
    *,
    label: str,
    require_response: bool,
    line_label: str = "row",
    keep: RowFilter | None = None,
) -> list[Example]:
    """One example per kept row; rows are (line or row number, {column: value})."""
    cols = column_map.resolve(columns, label)
    prompt_col, response_col = cols["prompt"], cols["response"]
    examples = []
    for number, row in rows:
        if keep is not None and not keep({str(k).strip().lower(): v for k, v in row.items()}):
            continue
        prompt = row.get(prompt_col) if prompt_col else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise DatasetError(
                "must be a non-empty string", path=label, line=number, field=prompt_col, line_label=line_label
            )
        context = _text(row.get(cols["context"])) if cols["context"] else None
        extra = _text(row.get(cols["input"])) if cols["input"] else None
        if context:
            prompt = f"{context}\n\n{prompt}"
        if extra:
            prompt = f"{prompt}\n\n{extra}"
        response = row.get(response_col) if response_col else None
        response = response if isinstance(response, str) and response.strip() else None
        if response is None and require_response:
            raise DatasetError(
                "missing (a response is required for this dataset)",
                path=label,
                line=number,
                field=response_col or "response",
                line_label=line_label,
            )
        example_id = _text(row.get(cols["id"])) if cols["id"] else None
        category = _text(row.get(cols["category"])) if cols["category"] else None
        examples.append(Example(prompt=prompt, response=response, id=example_id, category=category))
    if not examples:
        raise DatasetError("the dataset is empty (no examples found)", path=label)
    return examples


def hub_table(repo: str, *, config: str | None, split: str, revision: str | None, label: str) -> tuple[list[str], Any]:
    """(column names, rows) of one split of a hub dataset, through the `datasets` package."""
    try:
        import datasets as hf_datasets
    except ImportError:
        raise DatasetError(
            "the `datasets` package is needed to load Hugging Face datasets (pip install datasets)", path=label
        ) from None
    args = (repo, config) if config else (repo,)
    kwargs: dict[str, Any] = {"split": split}
    if revision:
        kwargs["revision"] = revision
    try:
        table = hf_datasets.load_dataset(*args, **kwargs)
    except Exception as exc:  # the hub raises many kinds (connection, missing repo, bad split, gated)
        raise DatasetError(
            f"could not load from the Hugging Face hub ({type(exc).__name__}: {exc})", path=label
        ) from exc
    return list(getattr(table, "column_names", []) or []), table


def numbered(rows: Iterable[Row], start: int = 1) -> Iterator[tuple[int, Row]]:
    """Rows numbered from ``start`` (hub rows: 1-based row numbers)."""
    return enumerate(rows, start=start)


# ---------------------------------------------------------------------------- local tables


def read_text(p: Path, path: str) -> str:
    """A file's text as UTF-8 (a leading byte-order mark dropped); an error names the line of a bad byte."""
    data = p.read_bytes()
    try:
        # utf-8-sig drops a leading byte-order mark (common in CSV exported from spreadsheets).
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})", path=path, line=line
        ) from None


def read_table(path: str) -> tuple[list[str], list[tuple[int, Row]], str]:
    """(columns, numbered rows, line label) of a local .csv (with a header), .jsonl or .json file."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError("file not found" if not p.exists() else "not a regular file", path=path)
    text = read_text(p, path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return (*_csv_table(text, path), "line")
    if suffix == ".jsonl":
        rows: list[tuple[int, Row]] = []
        for lineno, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
            if raw.strip():
                rows.append((lineno, _object(raw, path, lineno)))
        return _columns_of(rows), rows, "line"
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"invalid JSON ({exc.msg}, column {exc.colno})", path=path, line=exc.lineno) from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DatasetError("expected a JSON list of objects", path=path)
        rows = list(numbered(data))
        return _columns_of(rows), rows, "record"
    raise DatasetError(f"unsupported file extension {p.suffix!r}; expected .csv, .jsonl or .json", path=path)


def _object(raw: str, path: str, lineno: int) -> dict:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"invalid JSON ({exc.msg}, column {exc.colno})", path=path, line=lineno) from None
    if not isinstance(record, dict):
        raise DatasetError(f"expected a JSON object, got {type(record).__name__}", path=path, line=lineno)
    return record


def _columns_of(rows: Sequence[tuple[int, Row]]) -> list[str]:
    return list(dict.fromkeys(key for _, row in rows for key in row))


def _csv_table(text: str, path: str) -> tuple[list[str], list[tuple[int, Row]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return [], []
    except csv.Error as exc:
        raise DatasetError(f"invalid CSV ({exc})", path=path, line=1) from None
    rows: list[tuple[int, Row]] = []
    while True:
        lineno = reader.line_num + 1  # where this row starts (quoted cells may span lines)
        try:
            cells = next(reader)
        except StopIteration:
            return header, rows
        except csv.Error as exc:
            raise DatasetError(f"invalid CSV ({exc})", path=path, line=lineno) from None
        if any(c.strip() for c in cells):
            rows.append((lineno, dict(zip(header, cells))))


def read_lines_csv(path: str) -> list[tuple[int, str]]:
    """(line, text) of the first cell of every row of a header-less CSV (HEx-PHI's category files)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError("file not found" if not p.exists() else "not a regular file", path=path)
    reader = csv.reader(io.StringIO(read_text(p, path), newline=""))
    lines: list[tuple[int, str]] = []
    while True:
        lineno = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return lines
        except csv.Error as exc:
            raise DatasetError(f"invalid CSV ({exc})", path=path, line=lineno) from None
        text = ",".join(cells)  # one cell when quoted; an unquoted comma splits a prompt into several
        if text.strip():
            lines.append((lineno, text))
