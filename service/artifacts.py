"""Serving stored artifacts: resolving a stored URI inside its tenant's folder, streaming a directory.

Only the local artifact store can be served; with an fsspec store (S3 ...) clients read the
stored URIs themselves.
"""

from __future__ import annotations

import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from service.settings import Settings

CHUNK_BYTES = 1 << 20


def tenant_path(artifact_dir: Path, tenant_id: uuid.UUID, uri: str | None) -> Path | None:
    """The path behind ``uri`` if it lies inside the tenant's artifact folder, else None."""
    if not uri:
        return None
    root = (artifact_dir / str(tenant_id)).resolve()
    path = (artifact_dir / uri.removeprefix("file://")).resolve()
    # A stored URI must never lead outside the owner's folder (another tenant's, or anywhere).
    return path if path.is_relative_to(root) else None


def tenant_file(artifact_dir: Path, tenant_id: uuid.UUID, uri: str | None) -> Path | None:
    """The file behind ``uri`` if it exists inside the tenant's artifact folder, else None."""
    path = tenant_path(artifact_dir, tenant_id, uri)
    return path if path is not None and path.is_file() else None


def remove_job_artifacts(settings: Settings, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Remove everything stored for a job: ``<tenant>/jobs/<job>`` locally and, if configured, in the fsspec store."""
    key = f"{tenant_id}/jobs/{job_id}"  # worker/store.py: job_key
    shutil.rmtree(Path(settings.artifact_dir) / key, ignore_errors=True)
    if settings.artifact_url:
        import fsspec  # only deployments with a remote store need it

        fs, root = fsspec.core.url_to_fs(settings.artifact_url)
        path = f"{root.rstrip('/')}/{key}"
        if fs.exists(path):
            fs.rm(path, recursive=True)


def remove_dataset_file(settings: Settings, tenant_id: uuid.UUID, relative_path: str) -> None:
    """Remove an uploaded dataset's file and the ``<sha256>.<format>`` links the workers put beside it."""
    path = tenant_path(Path(settings.artifact_dir), tenant_id, relative_path)
    if path is None:
        return
    for found in [path, *path.parent.glob(f"{path.name}.*")]:
        found.unlink(missing_ok=True)


def tar_stream(directory: Path) -> Iterator[bytes]:
    """An uncompressed tar of ``directory``'s regular files, produced chunk by chunk.

    Written by hand rather than through ``tarfile.open(mode="w|")`` so that a multi-gigabyte model
    streams with constant memory and no thread; weights do not compress, so no gzip.
    Symlinks are skipped: they could point outside the tenant's folder.
    """
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        stat = path.stat()
        info = tarfile.TarInfo(f"{directory.name}/{path.relative_to(directory).as_posix()}")
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk
        if padding := -stat.st_size % tarfile.BLOCKSIZE:
            yield b"\0" * padding
    yield b"\0" * (2 * tarfile.BLOCKSIZE)  # end of archive
