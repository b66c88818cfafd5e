"""The uint8 tensor cache: round trip through memory maps, rebuild on version change and damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mchad.data.cache import cache_files, cached, read_cache, write_cache


def arrays(n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


class Builder:
    """A cache build function that counts its calls."""

    def __init__(self, seed: int = 0) -> None:
        self.calls = 0
        self.seed = seed

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return arrays(seed=self.seed)


def test_round_trip_is_memory_mapped_uint8(tmp_path: Path) -> None:
    images, labels = arrays()
    write_cache(tmp_path, "toy", "train", 1, images, labels)
    data = read_cache(tmp_path, "toy", "train", 1)
    assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
    assert np.array_equal(data.images.numpy(), images) and np.array_equal(data.labels.numpy(), labels)
    assert isinstance(np.load(cache_files(tmp_path, "toy", "train", 1)[0], mmap_mode="r"), np.memmap)
    meta = json.loads(cache_files(tmp_path, "toy", "train", 1)[2].read_text())
    assert meta["shape"] == [20, 32, 32, 3] and meta["dtype"] == "uint8" and meta["count"] == 20
    assert not list(tmp_path.glob("*.part"))


def test_cached_builds_once(tmp_path: Path) -> None:
    build = Builder()
    first = cached(tmp_path, "toy", "test", 1, build)
    second = cached(tmp_path, "toy", "test", 1, build)
    assert build.calls == 1
    assert torch.equal(first.images, second.images)


def test_version_change_rebuilds_and_removes_old_entry(tmp_path: Path) -> None:
    cached(tmp_path, "toy", "test", 1, Builder(seed=0))
    rebuilt = Builder(seed=1)
    data = cached(tmp_path, "toy", "test", 2, rebuilt)
    assert rebuilt.calls == 1
    assert np.array_equal(data.images.numpy(), arrays(seed=1)[0])
    assert not any(path.exists() for path in cache_files(tmp_path, "toy", "test", 1))
    assert all(path.exists() for path in cache_files(tmp_path, "toy", "test", 2))


@pytest.mark.parametrize("damaged", [0, 1], ids=["images", "labels"])
def test_truncated_cache_is_rebuilt(tmp_path: Path, damaged: int) -> None:
    cached(tmp_path, "toy", "test", 1, Builder())
    path = cache_files(tmp_path, "toy", "test", 1)[damaged]
    path.write_bytes(path.read_bytes()[:-100])
    assert read_cache(tmp_path, "toy", "test", 1) is None
    build = Builder()
    data = cached(tmp_path, "toy", "test", 1, build)
    assert build.calls == 1 and len(data) == 20


def test_garbage_with_the_right_size_is_rebuilt(tmp_path: Path) -> None:
    cached(tmp_path, "toy", "test", 1, Builder())
    path = cache_files(tmp_path, "toy", "test", 1)[0]
    path.write_bytes(b"\0" * path.stat().st_size)  # header destroyed, size unchanged
    assert read_cache(tmp_path, "toy", "test", 1) is None


def test_entry_without_sidecar_is_missing(tmp_path: Path) -> None:
    cached(tmp_path, "toy", "test", 1, Builder())
    cache_files(tmp_path, "toy", "test", 1)[2].unlink()
    assert read_cache(tmp_path, "toy", "test", 1) is None


def test_write_rejects_non_uint8(tmp_path: Path) -> None:
    images, labels = arrays()
    with pytest.raises(ValueError, match="uint8"):
        write_cache(tmp_path, "toy", "test", 1, images.astype(np.float32), labels)
