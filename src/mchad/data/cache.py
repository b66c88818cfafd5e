"""The on-disk cache of decoded data sets: uint8 images and int64 labels as .npy files.

For a data set ``name`` and split ``split`` the cache holds, under ``cache_dir``::

    <name>-<split>-v<version>.npy          images, uint8 (N, 32, 32, 3)
    <name>-<split>-v<version>.labels.npy   labels, int64 (N,)
    <name>-<split>-v<version>.json         version, shape, dtype, count and byte sizes

Each file is written to a temporary name and renamed; the JSON sidecar is renamed last,
so a cache entry without a sidecar is incomplete. Reading memory-maps the images, so a
large outlier set (300,000 images, 921.6 MB) costs RSS only for the pages a batch
touches, never a float32 copy. An entry whose sidecar does not match its files
(truncated, corrupted, other version) is treated as missing and rebuilt by the caller.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mchad.data.tensors import ImageTensors

log = logging.getLogger(__name__)

IMAGE_SHAPE = (32, 32, 3)
COPY_CHUNK = 10_000


def cache_stem(name: str, split: str, version: int) -> str:
    return f"{name}-{split}-v{version}"


def cache_files(cache_dir: Path, name: str, split: str, version: int) -> tuple[Path, Path, Path]:
    """Paths of the images, labels and sidecar files of one cache entry."""
    stem = cache_stem(name, split, version)
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.labels.npy", cache_dir / f"{stem}.json"


def _atomic_path(final: Path) -> Path:
    handle, path = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    os.close(handle)
    # mkstemp creates 0600; a shared data dir must stay readable by the other users' runs
    os.chmod(path, 0o644)
    return Path(path)


def _write_npy(final: Path, array: np.ndarray) -> None:
    """Write ``array`` (possibly a memory map) as a .npy file chunk by chunk, atomically.

    Plain file writes rather than a writable memory map, so the written pages never
    count towards this process's RSS.
    """
    part = _atomic_path(final)
    try:
        with open(part, "wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": array.shape}
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, len(array), COPY_CHUNK):
                f.write(np.ascontiguousarray(array[start : start + COPY_CHUNK]).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)


def write_cache(cache_dir: Path, name: str, split: str, version: int, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one cache entry (sidecar last) and remove the entries of other versions."""
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"cache images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != images.shape[:1]:
        raise ValueError(f"cache labels must have shape ({len(images)},), got {labels.shape}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    image_file, label_file, sidecar = cache_files(cache_dir, name, split, version)
    sidecar.unlink(missing_ok=True)
    _write_npy(image_file, images)
    _write_npy(label_file, labels)
    meta = {
        "version": version,
        "shape": list(images.shape),
        "dtype": str(images.dtype),
        "count": int(len(images)),
        "images_bytes": image_file.stat().st_size,
        "labels_bytes": label_file.stat().st_size,
    }
    part = _atomic_path(sidecar)
    part.write_text(json.dumps(meta, indent=1))
    os.replace(part, sidecar)
    for stale in cache_dir.glob(f"{name}-{split}-v*"):
        if not stale.name.startswith(cache_stem(name, split, version) + "."):
            stale.unlink(missing_ok=True)


def read_cache(cache_dir: Path, name: str, split: str, version: int) -> ImageTensors | None:
    """The cached entry as tensors over memory maps, or None when missing, stale or damaged."""
    image_file, label_file, sidecar = cache_files(cache_dir, name, split, version)
    if not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        problem = None
        if meta["version"] != version:
            problem = f"version {meta['version']} != {version}"
        elif image_file.stat().st_size != meta["images_bytes"] or label_file.stat().st_size != meta["labels_bytes"]:
            problem = "file size differs from the sidecar (truncated?)"
        else:
            # copy-on-write maps are writable, so torch.from_numpy accepts them without a copy
            images = np.load(image_file, mmap_mode="c")
            labels = np.load(label_file)
            if list(images.shape) != meta["shape"] or str(images.dtype) != meta["dtype"] or len(labels) != meta["count"]:
                problem = "array header differs from the sidecar"
    except (OSError, ValueError, KeyError) as error:
        problem = f"unreadable ({error})"
    if problem:
        log.warning("cache %s is invalid (%s); rebuilding it", sidecar, problem)
        return None
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels))


def cached(
    cache_dir: Path, name: str, split: str, version: int, build: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> ImageTensors:
    """Read a cache entry, building and writing it first when it is missing or invalid.

    Not locked: callers that may race (parallel runs) hold a lock around this call.
    """
    tensors = read_cache(cache_dir, name, split, version)
    if tensors is None:
        write_cache(cache_dir, name, split, version, *build())
        tensors = read_cache(cache_dir, name, split, version)
        if tensors is None:
            raise OSError(f"the cache entry {cache_files(cache_dir, name, split, version)[0]} could not be read back")
    return tensors
