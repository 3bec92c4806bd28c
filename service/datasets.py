"""Dataset files: stream an upload to disk under a size limit, hash it, check and count its rows."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service.problems import ContentTooLarge, Unprocessable

FORMATS = ("jsonl", "csv", "json", "txt")
CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredFile:
    relative_path: str
    sha256: str
    size_bytes: int
    rows: int


def infer_format(filename: str | None, given: str | None) -> str:
    """The dataset format: ``given`` if set, else the file extension; 422 when neither is known."""
    fmt = given or Path(filename or "").suffix.lstrip(".").lower()
    fmt = {"ndjson": "jsonl", "text": "txt"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise Unprocessable.field("body.format", f"cannot tell the format; pass one of {', '.join(FORMATS)}")
    return fmt


# The record shapes the engine's loaders accept (ssah_engine/data/loaders.py; not imported: the API
# stays light). Checked at upload so a wrong file is refused with its line and field, not hours later.
CSV_PROMPT_COLUMNS = ("goal", "behavior", "forbidden_prompt", "prompt")  # AdvBench/JBB, HarmBench, StrongREJECT, ours


def _bad(where: str, msg: str) -> Unprocessable:
    return Unprocessable.field("body.file", f"{where}: {msg}")


def _check_record(record: object, where: str) -> None:
    """One JSON record: ``{prompt, response?}`` or Alpaca-style ``{instruction, input?, output?}``."""
    if not isinstance(record, dict):
        raise _bad(where, f"expected a JSON object, got {type(record).__name__}")
    prompt_field, response_field = (
        ("instruction", "output") if "prompt" not in record and "instruction" in record else ("prompt", "response")
    )
    prompt = record.get(prompt_field)
    if prompt is None:
        raise _bad(where, "field 'prompt' missing (expected 'prompt', or Alpaca-style 'instruction')")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad(where, f"field {prompt_field!r} must be a non-empty string")
    response = record.get(response_field)
    if response is not None and (not isinstance(response, str) or not response.strip()):
        raise _bad(where, f"field {response_field!r} must be a non-empty string (or absent)")


def _count_csv(text: str) -> int:
    # strict: a file cut off inside a quoted cell is an error, not a silently merged last row.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return 0
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        prompt_col = next((columns[c] for c in CSV_PROMPT_COLUMNS if c in columns), None)
        if prompt_col is None:
            raise _bad(
                "line 1",
                f"unrecognised CSV header {header!r}; expected a column "
                f"{', '.join(repr(c) for c in CSV_PROMPT_COLUMNS)}",
            )
        rows = 0
        while True:
            lineno = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return rows
            if not any(cell.strip() for cell in row):
                continue
            if prompt_col >= len(row) or not row[prompt_col].strip():
                raise _bad(f"line {lineno}", f"field {header[prompt_col].strip()!r} must be a non-empty string")
            rows += 1
    except csv.Error as exc:
        raise _bad(f"line {reader.line_num}", f"bad CSV ({exc})") from exc


MAX_NESTING = 100  # arrays/objects inside each other; a record needs 2, deeper only serves to crash the parser
_JSON_TOKENS = re.compile(r'\\.|["\[\]{}\n]')


def nesting_line(text: str, limit: int = MAX_NESTING) -> int | None:
    """The 1-based line where JSON ``text`` nests arrays/objects deeper than ``limit``, or None."""
    depth, line, in_string = 0, 1, False
    for token in _JSON_TOKENS.finditer(text):
        char = token[0]
        if char == "\n":
            line += 1
        elif char == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line
        elif char in "]}":
            depth -= 1
    return None


def _loads(text: str, where: str, *, line: int = 1) -> object:
    """``json.loads``, refusing nesting deeper than ``MAX_NESTING`` (the parser's RecursionError: a 500)."""
    try:
        return json.loads(text)
    except RecursionError:
        deep = nesting_line(text)
        raise _bad(
            f"line {line + (deep or 1) - 1}" if where == "line" else where,
            f"JSON nested deeper than {MAX_NESTING} arrays/objects",
        ) from None


def check_name(value: str | None, loc: str, *, max_length: int = 200) -> None:
    """422 naming ``loc`` if a name holds control characters (NUL: PostgreSQL refuses it) or is too long."""
    if value is None:
        return
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise Unprocessable.field(loc, "control characters (NUL, newline, ...) are not allowed in names")
    if len(value) > max_length:
        raise Unprocessable.field(loc, f"longer than {max_length} characters; give a shorter name")


def count_rows(data: bytes, fmt: str) -> int:
    """Count the records of ``data`` in ``fmt``; 422 naming the first bad line (and field)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data.count(b"\n", 0, exc.start) + 1
        raise _bad(f"line {bad_line}", f"not UTF-8 text (byte {exc.start})") from exc
    if fmt == "jsonl":
        rows = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = _loads(line, "line", line=lineno)
            except json.JSONDecodeError as exc:
                raise _bad(f"line {lineno}", f"not JSON ({exc.msg}, column {exc.colno})") from exc
            _check_record(record, f"line {lineno}")
            rows += 1
        return rows
    if fmt == "json":
        try:
            records = _loads(text, "line")
        except json.JSONDecodeError as exc:
            raise _bad(f"line {exc.lineno}", f"not JSON ({exc.msg})") from exc
        if not isinstance(records, list):
            raise Unprocessable.field("body.file", "a JSON dataset must be a list of records")
        for index, record in enumerate(records, 1):
            _check_record(record, f"record {index}")
        return len(records)
    if fmt == "csv":
        return _count_csv(text)
    return sum(1 for line in text.splitlines() if line.strip())


def store_upload(
    source: BinaryIO, *, artifact_dir: Path, tenant_id: uuid.UUID, fmt: str, max_bytes: int, max_rows: int
) -> StoredFile:
    """Copy ``source`` to ``<artifact_dir>/<tenant>/datasets/<sha256>``; 413 past either limit."""
    folder = artifact_dir / str(tenant_id) / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    digest, size, buffer = hashlib.sha256(), 0, bytearray()
    while chunk := source.read(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ContentTooLarge(
                f"the upload exceeds the limit of {max_bytes} bytes (max_upload_bytes)",
                extra={"limit": "max_upload_bytes", "limit_value": max_bytes, "limit_bytes": max_bytes},
            )
        digest.update(chunk)
        buffer += chunk
    if size == 0:
        raise Unprocessable.field("body.file", "the file is empty")
    rows = count_rows(bytes(buffer), fmt)
    if rows == 0:
        raise Unprocessable.field("body.file", "the file holds no records")
    if rows > max_rows:
        raise ContentTooLarge(
            f"the dataset has {rows} rows; the limit is {max_rows} (max_dataset_rows)",
            extra={"limit": "max_dataset_rows", "limit_value": max_rows, "limit_rows": max_rows},
        )
    sha = digest.hexdigest()
    path = folder / sha
    if not path.exists():  # content-addressed: the same bytes are stored once per tenant
        tmp = folder / f".{sha}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(buffer)
        os.replace(tmp, path)
    return StoredFile(relative_path=f"{tenant_id}/datasets/{sha}", sha256=sha, size_bytes=size, rows=rows)
