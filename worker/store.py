"""Where job artifacts live: a local directory by default, any fsspec filesystem (S3...) when configured.

Keys are ``<tenant>/jobs/<job_id>/<name>``. A local artifact's URI is that key, relative to
``artifact_dir`` (what the API's download route expects); a remote one is the full fsspec URL.
Publishing replaces whatever a crashed earlier attempt left under the same key.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from service.settings import Settings


def job_key(tenant_id: uuid.UUID | str, job_id: uuid.UUID | str, name: str) -> str:
    """The store key of artifact ``name`` of job ``job_id``."""
    return f"{tenant_id}/jobs/{job_id}/{name}"


class LocalStore:
    """Artifacts under a local (or mounted) directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def scratch(self) -> tempfile.TemporaryDirectory:
        """A temporary directory on the same filesystem, so publishing is a rename."""
        (self.root / ".scratch").mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=self.root / ".scratch")

    def put(self, local: Path, key: str) -> str:
        """Move the file or directory ``local`` to ``key``, replacing what is there; return its URI."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove(target)
        shutil.move(str(local), str(target))
        return key

    def locate(self, key: str) -> str:
        """An absolute location of ``key`` that other programs can open (e.g. to register a model)."""
        return str((self.root / key).resolve())

    def fetch(self, key: str, scratch: Path) -> Path:
        """A local path holding ``key`` (here: the stored path itself)."""
        path = self.root / key
        if not path.exists():
            raise FileNotFoundError(f"artifact {key} is missing from {self.root}")
        return path

    def delete_prefix(self, key: str) -> None:
        """Remove everything under ``key`` (a re-run starts from a clean slate)."""
        _remove(self.root / key)


class FsspecStore:
    """Artifacts on any fsspec filesystem, e.g. ``s3://bucket/prefix`` (needs s3fs) or ``memory://x``."""

    def __init__(self, url: str, scratch_root: Path):
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url)
        self.protocol = url.split("://", 1)[0]
        self.base = root.rstrip("/")
        self.scratch_root = Path(scratch_root)

    def scratch(self) -> tempfile.TemporaryDirectory:
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=self.scratch_root)

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def url(self, key: str) -> str:
        return f"{self.protocol}://{self._path(key).lstrip('/')}"

    def locate(self, key: str) -> str:
        return self.url(key)

    def put(self, local: Path, key: str) -> str:
        self.delete_prefix(key)
        if Path(local).is_dir():
            for file in sorted(p for p in Path(local).rglob("*") if p.is_file()):
                self.fs.put_file(str(file), self._path(f"{key}/{file.relative_to(local).as_posix()}"))
        else:
            self.fs.put_file(str(local), self._path(key))
        return self.url(key)

    def fetch(self, key: str, scratch: Path) -> Path:
        target = Path(scratch) / key.replace("/", "_")
        source = self._path(key)
        if not self.fs.exists(source):
            raise FileNotFoundError(f"artifact {self.url(key)} is missing")
        if self.fs.isdir(source):
            for remote in self.fs.find(source):
                relative = remote[len(source) :].lstrip("/")
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(remote, str(target / relative))
        else:
            self.fs.get_file(source, str(target))
        return target

    def delete_prefix(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


ArtifactStore = LocalStore | FsspecStore


def make_store(settings: Settings) -> ArtifactStore:
    """The store the settings name: ``artifact_url`` through fsspec, else the local ``artifact_dir``."""
    if settings.artifact_url:
        return FsspecStore(settings.artifact_url, Path(settings.artifact_dir) / ".scratch")
    return LocalStore(Path(settings.artifact_dir))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        os.remove(path)
