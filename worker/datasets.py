"""Dataset ids -> loadable files, and loading with errors that name the tenant's dataset."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from sqlalchemy.orm import Session

from service import queries
from service.settings import Settings
from ssah_engine.data import Dataset, DatasetError, load_dataset

DEFAULT_SAFETY = "builtin:safety"
DEFAULT_UTILITY = "builtin:utility"


def dataset_file(session: Session, settings: Settings, *, tenant_id: uuid.UUID, dataset_id: str) -> tuple[str, str]:
    """(path with the format's extension, display name) of the tenant's uploaded dataset ``dataset_id``.

    Uploads are stored content-addressed without an extension; the engine picks its reader from the
    extension, so a stable ``<sha256>.<format>`` link sits next to the file (stable: the evaluation
    protocol hash covers the path).
    """
    row = queries.get_dataset(session, tenant_id=tenant_id, dataset_id=uuid.UUID(str(dataset_id)))
    if row is None:
        raise DatasetError(f"dataset {dataset_id} does not exist (deleted?)")
    stored = (Path(settings.artifact_dir) / row.path).resolve()
    if not stored.is_file():
        raise DatasetError(f"the file of dataset {row.name!r} ({row.id}) is missing from the artifact store")
    linked = stored.with_name(f"{stored.name}.{row.format}")
    if not linked.exists():
        try:
            os.symlink(stored.name, linked)
        except FileExistsError:
            pass
        except OSError:  # no symlinks on this filesystem
            shutil.copyfile(stored, linked)
    return str(linked), f"dataset {row.name!r} ({row.id})"


def read_dataset(path: str, display: str, *, limit: int | None = None, require_response: bool = True) -> Dataset:
    """Load a dataset; errors name the dataset, the line and the field as the engine found them."""
    try:
        return load_dataset(path, limit=limit, require_response=require_response)
    except DatasetError as error:
        if error.path is None or path.startswith("builtin:"):
            raise
        raise DatasetError(
            error.reason, path=display, line=error.line, field=error.field, line_label=error.line_label
        ) from None
