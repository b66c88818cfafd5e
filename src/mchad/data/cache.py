"""The on-disk cache of decoded data sets: uint8 images and int64 labels as .npy files.

For a data set ``name`` and split ``split`` the cache holds, under ``cache_dir``::

    <name>-<split>-v<version>.npy          images, uint8 (N, 32, 32, 3)
    <name>-<split>-v<version>.labels.npy   labels, int64 (N,)
    <name>-<split>-v<version>.json         format, version, shape, dtype, count, byte sizes,
                                           sha256 of both files, the source's fingerprint

Each file is written to a temporary name (``.<file>.*.part``) and renamed; the JSON
sidecar is renamed last, so a cache entry without a sidecar is incomplete. Temporary
files left by a killed writer are removed when the entry is next built. Reading
memory-maps the images, so a large outlier set (300,000 images, 921.6 MB) costs RSS
only for the pages a batch touches, never a float32 copy. Opening an entry streams both
files through sha256 (the page cache, not the process, holds what is read) and compares
the source's :class:`Fingerprint` with the one it was built from. An entry whose
sidecar does not match its files (truncated, corrupted, other version or format) or its
source (files changed since) is treated as missing and rebuilt by the caller.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mchad.data.download import stream_digest
from mchad.data.tensors import ImageTensors

log = logging.getLogger(__name__)

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


def _atomic_path(final: Path) -> Path:
    handle, path = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    os.close(handle)
    # mkstemp creates 0600; a shared data dir must stay readable by the other users' runs
    os.chmod(path, 0o644)
    return Path(path)


def _write_npy(final: Path, array: np.ndarray) -> str:
    """Write ``array`` (possibly a memory map) as a .npy file chunk by chunk, atomically; return its sha256.

    Plain file writes rather than a writable memory map, so the written pages never
    count towards this process's RSS. The bytes are hashed as they are written, so the
    file is not read back for its hash.
    """
    header = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(array.dtype)
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": array.shape})
    digest = hashlib.sha256()
    part = _atomic_path(final)
    try:
        with open(part, "wb") as f:
            f.write(header.getvalue())
            digest.update(header.getvalue())
            for start in range(0, len(array), COPY_CHUNK):
                chunk = np.ascontiguousarray(array[start : start + COPY_CHUNK]).tobytes()
                f.write(chunk)
                digest.update(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    return digest.hexdigest()


def _remove_parts(cache_dir: Path, name: str, split: str) -> None:
    """Remove the temporary files a killed writer left for ``name``/``split`` (any version)."""
    for part in cache_dir.glob(f".{glob.escape(name)}-{glob.escape(split)}-v*.part"):
        part.unlink(missing_ok=True)


def write_cache(
    cache_dir: Path, name: str, split: str, version: int, source: Fingerprint, images: np.ndarray, labels: np.ndarray
) -> None:
    """Write one cache entry (sidecar last) and remove the entries of other versions.

    Also removes the temporary files of earlier writes that were killed: callers that
    may race hold a lock around this call, so none of them is still being written.
    """
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"cache images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != images.shape[:1]:
        raise ValueError(f"cache labels must have shape ({len(images)},), got {labels.shape}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_parts(cache_dir, name, split)
    image_file, label_file, sidecar = cache_files(cache_dir, name, split, version)
    sidecar.unlink(missing_ok=True)
    images_sha256 = _write_npy(image_file, images)
    labels_sha256 = _write_npy(label_file, labels)
    meta = {
        "format": FORMAT,
        "version": version,
        "shape": list(images.shape),
        "dtype": str(images.dtype),
        "count": len(images),
        "images_bytes": image_file.stat().st_size,
        "labels_bytes": label_file.stat().st_size,
        "images_sha256": images_sha256,
        "labels_sha256": labels_sha256,
        "source": source.what,
        "source_digest": source.digest,
    }
    part = _atomic_path(sidecar)
    part.write_text(json.dumps(meta, indent=1))
    os.replace(part, sidecar)
    for stale in cache_dir.glob(f"{glob.escape(name)}-{glob.escape(split)}-v*"):
        if not stale.name.startswith(cache_stem(name, split, version) + "."):
            stale.unlink(missing_ok=True)


def _load_verified(path: Path, sha256: str, mmap: bool) -> np.ndarray:
    """The array in ``path`` after checking its bytes against ``sha256``; memory-mapped copy-on-write if ``mmap``.

    Hashed and mapped through one open file, so the bytes checked are the bytes used
    even if a writer replaces the file meanwhile.
    """
    with open(path, "rb") as f:
        if stream_digest(f, "sha256") != sha256:
            raise _InvalidEntry(f"content hash differs: {path.name}")
        f.seek(0)
        if not mmap:
            return np.load(f)
        # the bytes are the ones _write_npy wrote, so the header is version 1.0 in C order
        np.lib.format.read_magic(f)
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        # copy-on-write maps are writable, so torch.from_numpy accepts them without a copy
        return np.memmap(f, dtype=dtype, mode="c", shape=shape, offset=f.tell())


def open_cache(
    cache_dir: Path, name: str, split: str, version: int, source: Fingerprint
) -> tuple[ImageTensors | None, str | None]:
    """The cached entry as tensors over memory maps and None, or None and why the entry is unusable.

    A missing entry (no sidecar) is (None, None): nothing to report.
    """
    image_file, label_file, sidecar = cache_files(cache_dir, name, split, version)
    if not sidecar.exists():
        return None, None
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("format", 1) != FORMAT:
            raise _InvalidEntry(f"sidecar format {meta.get('format', 1)}, expected {FORMAT}")
        if meta["version"] != version:
            raise _InvalidEntry(f"version {meta['version']} != {version}")
        if meta["source_digest"] != source.digest:
            raise _InvalidEntry(f"source changed: {source.what}")
        if image_file.stat().st_size != meta["images_bytes"] or label_file.stat().st_size != meta["labels_bytes"]:
            raise _InvalidEntry("file size differs from the sidecar (truncated?)")
        images = _load_verified(image_file, meta["images_sha256"], mmap=True)
        labels = _load_verified(label_file, meta["labels_sha256"], mmap=False)
        if list(images.shape) != meta["shape"] or str(images.dtype) != meta["dtype"] or len(labels) != meta["count"]:
            raise _InvalidEntry("array header differs from the sidecar")
        return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels)), None
    except _InvalidEntry as problem:
        return None, str(problem)
    except (OSError, ValueError, KeyError) as error:
        return None, f"unreadable ({' '.join(str(error).split())})"


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
