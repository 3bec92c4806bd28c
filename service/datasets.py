"""Dataset files: stream an upload to disk under a size limit, hash it, check and count its rows."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service.errors import ContentTooLarge, Unprocessable

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


def count_rows(data: bytes, fmt: str) -> int:
    """Count the records of ``data`` in ``fmt``; 422 naming the first bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unprocessable.field("body.file", f"not UTF-8 text (byte {exc.start})") from exc
    if fmt == "jsonl":
        rows = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise Unprocessable.field("body.file", f"line {lineno} is not JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise Unprocessable.field("body.file", f"line {lineno} is not a JSON object")
            rows += 1
        return rows
    if fmt == "json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Unprocessable.field("body.file", f"not JSON: {exc.msg} at line {exc.lineno}") from exc
        if not isinstance(records, list):
            raise Unprocessable.field("body.file", "a JSON dataset must be a list of records")
        return len(records)
    if fmt == "csv":
        try:
            return max(sum(1 for row in csv.reader(io.StringIO(text)) if row) - 1, 0)  # minus the header
        except csv.Error as exc:
            raise Unprocessable.field("body.file", f"bad CSV: {exc}") from exc
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
            raise ContentTooLarge(f"the upload exceeds the limit of {max_bytes} bytes (max_upload_bytes)",
                                  extra={"limit_bytes": max_bytes})
        digest.update(chunk)
        buffer += chunk
    if size == 0:
        raise Unprocessable.field("body.file", "the file is empty")
    rows = count_rows(bytes(buffer), fmt)
    if rows == 0:
        raise Unprocessable.field("body.file", "the file holds no records")
    if rows > max_rows:
        raise ContentTooLarge(f"the dataset has {rows} rows; the limit is {max_rows} (max_dataset_rows)",
                              extra={"limit_rows": max_rows})
    sha = digest.hexdigest()
    path = folder / sha
    if not path.exists():  # content-addressed: the same bytes are stored once per tenant
        tmp = folder / f".{sha}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(buffer)
        os.replace(tmp, path)
    return StoredFile(relative_path=f"{tenant_id}/datasets/{sha}", sha256=sha, size_bytes=size, rows=rows)
