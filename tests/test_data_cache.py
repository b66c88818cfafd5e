"""The uint8 tensor cache: round trip through memory maps, rebuild on version change, damage and source change."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mchad.data import cache
from mchad.data.cache import CacheEntry, Fingerprint

SOURCE = Fingerprint("toy generator", "toy-1")


def arrays(n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def warnings_about(caplog, entry: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and entry in r.getMessage()]


def mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose memory map holds ``tensor``'s first byte (from Linux's /proc/self/maps), or None."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(address, 16) for address in fields[0].split("-"))
        if start <= tensor.data_ptr() < end:
            return fields[5] if len(fields) == 6 else None
    return None


class Builder:
    """A cache build function that counts its calls."""

    def __init__(self, seed: int = 0) -> None:
        self.calls = 0
        self.seed = seed

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return arrays(seed=self.seed)


def test_round_trip_is_memory_mapped_uint8(tmp_path: Path) -> None:
    entry = CacheEntry(tmp_path, "toy", "train", 1)
    images, labels = arrays()
    entry.write(SOURCE, images, labels)
    data = entry.open(SOURCE)
    assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
    assert np.array_equal(data.images.numpy(), images) and np.array_equal(data.labels.numpy(), labels)
    assert isinstance(np.load(entry.files[0], mmap_mode="r"), np.memmap)
    if Path("/proc/self/maps").exists():  # the images are read through a memory map of the file, not copied
        assert mapped_file(data.images) == str(entry.files[0].resolve())
    meta = json.loads(entry.files[2].read_text())
    assert meta["shape"] == [20, 32, 32, 3] and meta["dtype"] == "uint8" and meta["count"] == 20
    assert not list(tmp_path.glob("*.part"))


def test_cached_builds_once(tmp_path: Path) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    build = Builder()
    first = entry.open_or_build(SOURCE, build)
    second = entry.open_or_build(SOURCE, build)
    assert build.calls == 1
    assert torch.equal(first.images, second.images)


def test_version_change_rebuilds_and_removes_old_entry(tmp_path: Path) -> None:
    old, new = CacheEntry(tmp_path, "toy", "test", 1), CacheEntry(tmp_path, "toy", "test", 2)
    old.open_or_build(SOURCE, Builder(seed=0))
    rebuilt = Builder(seed=1)
    data = new.open_or_build(SOURCE, rebuilt)
    assert rebuilt.calls == 1
    assert np.array_equal(data.images.numpy(), arrays(seed=1)[0])
    assert not any(path.exists() for path in old.files)
    assert all(path.exists() for path in new.files)


@pytest.mark.parametrize("damaged", [0, 1], ids=["images", "labels"])
def test_truncated_cache_is_rebuilt(tmp_path: Path, damaged: int) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    entry.open_or_build(SOURCE, Builder())
    path = entry.files[damaged]
    path.write_bytes(path.read_bytes()[:-100])
    assert entry.open(SOURCE) is None
    build = Builder()
    data = entry.open_or_build(SOURCE, build)
    assert build.calls == 1 and len(data) == 20


def test_garbage_with_the_right_size_is_rebuilt(tmp_path: Path) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    entry.open_or_build(SOURCE, Builder())
    path = entry.files[0]
    path.write_bytes(b"\0" * path.stat().st_size)  # header destroyed, size unchanged
    assert entry.open(SOURCE) is None


def test_entry_without_sidecar_is_missing(tmp_path: Path) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    entry.open_or_build(SOURCE, Builder())
    entry.files[2].unlink()
    assert entry.open(SOURCE) is None


def test_write_rejects_non_uint8(tmp_path: Path) -> None:
    images, labels = arrays()
    with pytest.raises(ValueError, match="uint8"):
        CacheEntry(tmp_path, "toy", "test", 1).write(SOURCE, images.astype(np.float32), labels)


def test_valid_entry_is_opened_without_a_warning(tmp_path: Path, caplog) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    entry.open_or_build(SOURCE, Builder())
    with caplog.at_level(logging.WARNING, logger="mchad.data.cache"):
        assert entry.open(SOURCE) is not None
    assert not caplog.records


@pytest.mark.parametrize("damaged", [0, 1], ids=["images", "labels"])
def test_flipped_byte_is_found_by_verify_not_on_open(tmp_path: Path, caplog, damaged: int) -> None:
    """Opening checks sizes and headers only (no 0.9 GB hash per sweep job); verify() hashes every byte."""
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    entry.open_or_build(SOURCE, Builder())
    assert entry.verify() == (20, None)
    path = entry.files[damaged]
    content = bytearray(path.read_bytes())
    content[-3] ^= 0x01  # one bit of the last image's pixels / the last label; header and size intact
    path.write_bytes(bytes(content))
    with caplog.at_level(logging.WARNING, logger="mchad.data.cache"):
        data = entry.open(SOURCE)
    assert not caplog.records
    flipped = (data.images if damaged == 0 else data.labels).numpy().tobytes()
    assert flipped == bytes(content[-len(flipped) :])  # what the file now holds, byte for byte
    assert entry.verify() == (None, f"content hash differs: {path.name}")


@pytest.mark.parametrize("damaged", [0, 1], ids=["images", "labels"])
def test_verify_names_truncation_and_a_missing_entry(tmp_path: Path, damaged: int) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    assert entry.verify() == (None, "not cached")
    entry.open_or_build(SOURCE, Builder())
    path = entry.files[damaged]
    path.write_bytes(path.read_bytes()[:-8])
    assert entry.verify() == (None, "file size differs from the sidecar (truncated?)")


def test_an_entry_that_does_not_read_back_as_written_gets_no_sidecar(tmp_path: Path, monkeypatch) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    monkeypatch.setattr(cache, "file_digest", lambda path, algorithm: "0" * 64)  # the disk returned other bytes
    expected = f"the cache entry {entry.files[0]} did not read back as written (content hash differs: toy-test-v1.npy)"
    with pytest.raises(OSError, match=re.escape(expected)):
        entry.write(SOURCE, *arrays())
    assert not any(path.exists() for path in entry.files) and not list(tmp_path.glob(".*.part"))


def test_header_with_another_shape_is_rebuilt(tmp_path: Path, caplog) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    entry.open_or_build(SOURCE, Builder())
    path = entry.files[0]
    content = path.read_bytes()
    path.write_bytes(content.replace(b"(20, 32, 32, 3)", b"(10, 64, 32, 3)", 1))  # same size, other shape
    with caplog.at_level(logging.WARNING, logger="mchad.data.cache"):
        assert entry.open(SOURCE) is None
    [warning] = warnings_about(caplog, "toy-test-v1")
    assert f"array header differs from the sidecar: {path.name}" in warning


def test_changed_source_is_rebuilt(tmp_path: Path, caplog) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    entry.open_or_build(SOURCE, Builder(seed=0))
    changed = Fingerprint("toy generator", "toy-2")
    rebuilt = Builder(seed=1)
    with caplog.at_level(logging.WARNING, logger="mchad.data.cache"):
        data = entry.open_or_build(changed, rebuilt)
    assert rebuilt.calls == 1 and np.array_equal(data.images.numpy(), arrays(seed=1)[0])
    [warning] = warnings_about(caplog, "toy-test-v1")
    assert "source changed: toy generator" in warning
    meta = json.loads(entry.files[2].read_text())
    assert meta["source"] == "toy generator" and meta["source_digest"] == "toy-2"
    assert entry.open(SOURCE) is None


def test_entry_of_the_previous_sidecar_format_is_rebuilt(tmp_path: Path, caplog) -> None:
    entry = CacheEntry(tmp_path, "toy", "test", 1)
    entry.open_or_build(SOURCE, Builder())
    sidecar = entry.files[2]
    meta = json.loads(sidecar.read_text())
    old_keys = ["version", "shape", "dtype", "count", "images_bytes", "labels_bytes"]
    sidecar.write_text(json.dumps({key: meta[key] for key in old_keys}))
    with caplog.at_level(logging.WARNING, logger="mchad.data.cache"):
        build = Builder()
        entry.open_or_build(SOURCE, build)
    assert build.calls == 1
    [warning] = warnings_about(caplog, "toy-test-v1")
    assert "sidecar format 1, expected 2" in warning


def test_stale_part_files_are_removed_when_the_entry_is_built(tmp_path: Path) -> None:
    stale = [".toy-test-v1.npy.k1ll3d.part", ".toy-test-v1.json.abc.part", ".toy-test-v0.labels.npy.old.part"]
    others = [".toy-train-v1.npy.other.part", ".toyota-test-v1.npy.other.part"]
    for name in stale + others:
        (tmp_path / name).write_bytes(b"half written")
    CacheEntry(tmp_path, "toy", "test", 1).open_or_build(SOURCE, Builder())
    assert not any((tmp_path / name).exists() for name in stale)
    assert all((tmp_path / name).exists() for name in others)
