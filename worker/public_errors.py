"""A job's error as its tenant may read it: no absolute server path, no internal tenant id, no password.

Exceptions quote where things live (``artifact <tenant>/jobs/<id>/unit_map is missing from
/srv/ssah/artifacts``, a Hugging Face cache path, a site-packages file). The tenant learns only
what it can use: artifact keys relative to its own folder, and the basenames of other paths. Its
own model source (which it registered, possibly an absolute path) is kept as it is.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from service.redact import redact

# An absolute path of at least two components, not part of a URL (scheme://host/...) or a longer word.
_ABSOLUTE = re.compile(r"(?<![\w.:/~>-])/(?:[\w.@+-]+/)+(?P<name>[\w.@+-]*)")
KEEP = "\x00{}\x00"


def public_error(
    text: str, *, artifact_dir: os.PathLike[str] | str, tenant_id: uuid.UUID | str, model_source: str | None = None
) -> str:
    """``text`` fit to store as ``jobs.error``."""
    text = redact(text)
    kept: list[str] = []
    if model_source and model_source.startswith("/") and model_source in text:
        kept.append(model_source)
        text = text.replace(model_source, KEEP.format(0))
    tenant = str(tenant_id)
    for root in {os.path.abspath(os.fspath(artifact_dir)), str(Path(artifact_dir).resolve())}:
        text = text.replace(f"{root}/{tenant}/", "").replace(root, "<artifact store>")
    text = text.replace(f"{tenant}/", "").replace(tenant, "<tenant>")
    text = _ABSOLUTE.sub(lambda m: f".../{m['name']}", text)
    for index, value in enumerate(kept):
        text = text.replace(KEEP.format(index), value)
    return text
