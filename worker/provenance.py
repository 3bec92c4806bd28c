"""Which exact model a job ran on: the source as registered, the revision asked for, the commit loaded.

A hub revision such as ``main`` or a tag moves; the commit does not. It is read back from the
Hugging Face cache the load just went through (the ``refs/<revision>`` file, or the snapshot path
of a local directory inside the cache), so no network call is needed. Builtins and plain local
directories have no commit (None).
"""

from __future__ import annotations

import re
from typing import Any

from service.model_policy import CheckedSource

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")


def resolved_commit(checked: CheckedSource) -> str | None:
    """The commit hash the loader used for ``checked``, or None when it has none or it cannot be told."""
    if checked.kind == "local":
        match = _SNAPSHOT.search(checked.source)
        return match[1] if match else None
    if checked.kind != "hub":
        return None
    revision = checked.revision or "main"
    if _COMMIT.match(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    repo_id = checked.source.split("@", 1)[0]
    try:
        path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - provenance must never fail a job that loaded fine
        return None
    match = _SNAPSHOT.search(str(path)) if isinstance(path, str) else None
    return match[1] if match else None


def provenance(checked: CheckedSource) -> dict[str, Any]:
    """What a job's results record about its model (``source``, ``revision``, ``commit``)."""
    return {"source": checked.source, "revision": checked.revision, "commit": resolved_commit(checked)}
