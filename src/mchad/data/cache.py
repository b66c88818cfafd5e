"""The on-disk cache of decoded data sets: uint8 images and int64 labels as .npy files.

For a data set ``name`` and split ``split`` the cache holds, under ``cache_dir``::

    <name>-<split>-v<version>.npy          images, uint8 (N, 32, 32, 3)
    <name>-<split>-v<version>.labels.npy   labels, int64 (N,)
    <name>-<split>-v<version>.json         format, version, shape, dtype, count, byte sizes,
                                           sha256 of both files, the source's fingerprint

Each file is written atomically (:func:`mchad.files.atomic_file`), the JSON sidecar last, so
an entry without a sidecar is incomplete. The content hash is taken as the bytes are
written and checked once more by reading them back before the sidecar names it
(:func:`write_cache`), and again on demand (:func:`verify_cache`, ``mchad-data verify``).
Opening an entry checks the sidecar's format, version and source fingerprint, both files'
sizes and their .npy headers, not their hashes: hashing on every open read 0.9 GB (the
300,000 outlier images) in every job of a sweep, while a truncated or overwritten file
already fails the size or header check. A flipped bit inside the pixels is found by
``mchad-data verify``. Reading memory-maps the images, so a large outlier set costs RSS
only for the pages a batch touches, never a float32 copy. An entry that fails a check
is treated as missing and rebuilt by the caller.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from mchad.data.download import file_digest
from mchad.data.tensors import ImageTensors
from mchad.files import atomic_file, atomic_write, remove_parts

log = logging.getLogger(__name__)
T = TypeVar("T")

IMAGE_SHAPE = (32, 32, 3)
COPY_CHUNK = 10_000
# the sidecar's layout; entries written in another layout are rebuilt
FORMAT = 2


@dataclass(frozen=True)
class Fingerprint:
    """What a cache entry is decoded from: ``what`` names it in messages, ``digest`` is its state.

    An entry built from a source whose digest has changed since is rebuilt.
    """

    what: str
    digest: str


class _InvalidEntry(Exception):
    """Why a cache entry cannot be used as it is."""


def cache_stem(name: str, split: str, version: int) -> str:
    return f"{name}-{split}-v{version}"


def cache_files(cache_dir: Path, name: str, split: str, version: int) -> tuple[Path, Path, Path]:
    """Paths of the images, labels and sidecar files of one cache entry."""
    stem = cache_stem(name, split, version)
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.labels.npy", cache_dir / f"{stem}.json"


def _write_npy(final: Path, array: np.ndarray) -> str:
    """Write ``array`` (possibly a memory map) as a .npy file chunk by chunk, atomically; return its sha256.

    Plain file writes rather than a writable memory map, so the written pages never
    count towards this process's RSS.
    """
    header = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(array.dtype)
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": array.shape})
    digest = hashlib.sha256(header.getvalue())
    with atomic_file(final) as f:
        f.write(header.getvalue())
        for start in range(0, len(array), COPY_CHUNK):
            chunk = np.ascontiguousarray(array[start : start + COPY_CHUNK]).tobytes()
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def write_cache(
    cache_dir: Path, name: str, split: str, version: int, source: Fingerprint, images: np.ndarray, labels: np.ndarray
) -> None:
    """Write one cache entry (sidecar last, once the files read back to their hashes) and remove other versions.

    Also removes the temporary files of earlier writes that were killed: callers that
    may race hold a lock around this call, so none of them is still being written.
    """
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"cache images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != images.shape[:1]:
        raise ValueError(f"cache labels must have shape ({len(images)},), got {labels.shape}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_parts(cache_dir, f"{name}-{split}-v")
    image_file, label_file, sidecar = cache_files(cache_dir, name, split, version)
    sidecar.unlink(missing_ok=True)
    meta = {
        "format": FORMAT,
        "version": version,
        "shape": list(images.shape),
        "dtype": str(images.dtype),
        "count": len(images),
        "images_sha256": _write_npy(image_file, images),
        "labels_sha256": _write_npy(label_file, labels),
        "images_bytes": image_file.stat().st_size,
        "labels_bytes": label_file.stat().st_size,
        "source": source.what,
        "source_digest": source.digest,
    }
    problem = _hash_problem(image_file, label_file, meta)
    if problem:
        raise OSError(f"the cache entry {image_file} did not read back as written ({problem}): check the disk")
    atomic_write(sidecar, json.dumps(meta, indent=1))
    for stale in cache_dir.glob(glob.escape(f"{name}-{split}-v") + "*"):
        if not stale.name.startswith(cache_stem(name, split, version) + "."):
            stale.unlink(missing_ok=True)


def _hash_problem(image_file: Path, label_file: Path, meta: dict) -> str | None:
    """Which file's bytes differ from the sha256 the sidecar records, or None."""
    for path, key in ((image_file, "images_sha256"), (label_file, "labels_sha256")):
        if file_digest(path, "sha256") != meta[key]:
            return f"content hash differs: {path.name}"
    return None


def _load(path: Path, shape: list[int], dtype: str, mmap: bool = False) -> np.ndarray:
    """The array in ``path``, after checking its .npy header against the sidecar's ``shape`` and ``dtype``."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        found_shape, fortran, found_dtype = np.lib.format.read_array_header_1_0(f)
        if list(found_shape) != shape or str(found_dtype) != dtype or fortran:
            raise _InvalidEntry(f"array header differs from the sidecar: {path.name}")
        if not mmap:
            return np.fromfile(f, dtype=found_dtype).reshape(found_shape)
        # copy-on-write maps are writable, so torch.from_numpy accepts them without a copy
        return np.memmap(f, dtype=found_dtype, mode="c", shape=found_shape, offset=f.tell())


def _checked(
    cache_dir: Path, name: str, split: str, version: int, use: Callable[[dict, Path, Path], T]
) -> tuple[T | None, str | None]:
    """``(use(sidecar, images file, labels file), None)`` for an entry whose sidecar format, version and file
    sizes match, ``(None, why not)`` for one that fails a check or ``use``, ``(None, None)`` without a sidecar."""
    image_file, label_file, sidecar = cache_files(cache_dir, name, split, version)
    if not sidecar.exists():
        return None, None
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("format", 1) != FORMAT:
            raise _InvalidEntry(f"sidecar format {meta.get('format', 1)}, expected {FORMAT}")
        if meta["version"] != version:
            raise _InvalidEntry(f"version {meta['version']} != {version}")
        if image_file.stat().st_size != meta["images_bytes"] or label_file.stat().st_size != meta["labels_bytes"]:
            raise _InvalidEntry("file size differs from the sidecar (truncated?)")
        return use(meta, image_file, label_file), None
    except _InvalidEntry as problem:
        return None, str(problem)
    except (OSError, ValueError, KeyError) as error:
        return None, f"unreadable ({' '.join(str(error).split())})"


def open_cache(
    cache_dir: Path, name: str, split: str, version: int, source: Fingerprint
) -> tuple[ImageTensors | None, str | None]:
    """The cached entry as tensors over memory maps and None, or None and why the entry is unusable.

    A missing entry (no sidecar) is (None, None): nothing to report.
    """

    def tensors(meta: dict, image_file: Path, label_file: Path) -> ImageTensors:
        if meta["source_digest"] != source.digest:
            raise _InvalidEntry(f"source changed: {source.what}")
        images = _load(image_file, meta["shape"], meta["dtype"], mmap=True)
        return ImageTensors(torch.from_numpy(images), torch.from_numpy(_load(label_file, [meta["count"]], "int64")))

    return _checked(cache_dir, name, split, version, tensors)


def verify_cache(cache_dir: Path, name: str, split: str, version: int) -> tuple[int | None, str | None]:
    """(images in the entry, None) when both files hash to the sidecar's sha256, else (None, what is wrong).

    Reads every byte of the entry (``mchad-data verify``); a missing entry is ``(None, "not cached")``.
    """

    def count(meta: dict, image_file: Path, label_file: Path) -> int:
        problem = _hash_problem(image_file, label_file, meta)
        if problem:
            raise _InvalidEntry(problem)
        return meta["count"]

    found, problem = _checked(cache_dir, name, split, version, count)
    return (found, problem) if found is not None or problem else (None, "not cached")


def read_cache(cache_dir: Path, name: str, split: str, version: int, source: Fingerprint) -> ImageTensors | None:
    """The cached entry as tensors over memory maps, or None when missing, stale or damaged.

    A stale or damaged entry is logged as one warning line naming the entry and why.
    """
    tensors, problem = open_cache(cache_dir, name, split, version, source)
    if problem:
        entry = cache_dir / cache_stem(name, split, version)
        log.warning("cache entry %s is invalid (%s): rebuilding it", entry, problem)
    return tensors


def cached(
    cache_dir: Path,
    name: str,
    split: str,
    version: int,
    source: Fingerprint,
    build: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> ImageTensors:
    """Read a cache entry, building and writing it first when it is missing, invalid or its source changed.

    ``source`` is the fingerprint of what ``build`` decodes, taken before it runs, so
    files changed during the build make the next read rebuild the entry again.
    Not locked: callers that may race (parallel runs) hold a lock around this call.
    """
    tensors = read_cache(cache_dir, name, split, version, source)
    if tensors is None:
        write_cache(cache_dir, name, split, version, source, *build())
        tensors = read_cache(cache_dir, name, split, version, source)
        if tensors is None:
            raise OSError(f"the cache entry {cache_files(cache_dir, name, split, version)[0]} could not be read back")
    return tensors
