"""The on-disk cache of decoded data sets: a :class:`CacheEntry` is three files in the cache folder::

    <name>-<split>-v<version>.npy          images, uint8 (N, 32, 32, 3)
    <name>-<split>-v<version>.labels.npy   labels, int64 (N,)
    <name>-<split>-v<version>.json         format, version, shape, dtype, count, both files' sizes and sha256, source

Each is written atomically (:func:`mchad.files.atomic_file`), the sidecar last (an entry without one is incomplete),
after both files read back to the sha256 taken while writing them. Opening checks the sidecar's format, version and
source fingerprint and both files' sizes and .npy headers, not their hashes: hashing on every open read 0.9 GB (the
300,000 outlier images) in every job of a sweep, while a truncated or overwritten file fails the size or header check;
``mchad-data verify`` finds a flipped bit in the pixels. Images are memory-mapped: a large outlier set costs RSS only
for the pages a batch touches, never a float32 copy.
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

import numpy as np
import torch

from mchad.data.download import file_digest
from mchad.data.tensors import ImageTensors
from mchad.files import atomic_file, atomic_write, remove_parts

log = logging.getLogger(__name__)

COPY_CHUNK = 10_000
# the sidecar's layout; entries written in another layout are rebuilt
FORMAT = 2


@dataclass(frozen=True)
class Fingerprint:
    """What a cache entry is decoded from: ``what`` names it in messages; a change of ``digest`` rebuilds it."""

    what: str
    digest: str


class _InvalidEntry(Exception):
    """Why a cache entry cannot be used as it is."""


def _why(error: Exception) -> str:
    """The problem with an entry that raised ``error`` while it was read, on one line."""
    return str(error) if isinstance(error, _InvalidEntry) else f"unreadable ({' '.join(str(error).split())})"


def _load(path: Path, shape: list[int], dtype: str) -> np.memmap:
    """``path`` as a copy-on-write memory map (writable: torch.from_numpy needs no copy) if its header is as given."""
    array = np.lib.format.open_memmap(path, mode="c")
    if list(array.shape) != shape or str(array.dtype) != dtype or np.isfortran(array):
        raise _InvalidEntry(f"array header differs from the sidecar: {path.name}")
    return array


@dataclass(frozen=True)
class CacheEntry:
    """The cache entry of data set ``name``'s ``split``, decoded by ``version`` of its reader, under ``folder``."""

    folder: Path
    name: str
    split: str
    version: int

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.split}-v{self.version}"

    @property
    def files(self) -> tuple[Path, ...]:
        """The images, labels and sidecar files."""
        return tuple(self.folder / f"{self.stem}{suffix}" for suffix in (".npy", ".labels.npy", ".json"))

    def _write_array(self, path: Path, array: np.ndarray) -> str:
        """Write ``array`` (possibly a memory map) to ``path`` as .npy chunk by chunk, atomically; return its sha256,
        read back before the file takes its name. Plain writes: a writable memory map's pages would count to RSS."""
        header = io.BytesIO()
        descr = np.lib.format.dtype_to_descr(array.dtype)
        np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": array.shape})
        digest = hashlib.sha256(header.getvalue())
        with atomic_file(path) as f:
            f.write(header.getvalue())
            for start in range(0, len(array), COPY_CHUNK):
                chunk = array[start : start + COPY_CHUNK].tobytes()
                f.write(chunk)
                digest.update(chunk)
            f.flush()
            if file_digest(Path(f.name), "sha256") != digest.hexdigest():
                problem = f"did not read back as written (content hash differs: {path.name})"
                raise OSError(f"the cache entry {self.files[0]} {problem}: check the disk")
        return digest.hexdigest()

    def write(self, source: Fingerprint, images: np.ndarray, labels: np.ndarray) -> None:
        """Write the entry, sidecar last; remove old versions and killed writers' .part files (callers hold a lock)."""
        if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"cache images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != images.shape[:1]:
            raise ValueError(f"cache labels must have shape ({len(images)},), got {labels.shape}")
        versions = f"{self.name}-{self.split}-v"
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_parts(self.folder, versions)
        image_file, label_file, sidecar = self.files
        sidecar.unlink(missing_ok=True)
        meta = {
            "format": FORMAT,
            "version": self.version,
            "shape": list(images.shape),
            "dtype": str(images.dtype),
            "count": len(images),
            "images_sha256": self._write_array(image_file, images),
            "labels_sha256": self._write_array(label_file, labels),
            "images_bytes": image_file.stat().st_size,
            "labels_bytes": label_file.stat().st_size,
            "source": source.what,
            "source_digest": source.digest,
        }
        atomic_write(sidecar, json.dumps(meta, indent=1))
        for stale in self.folder.glob(glob.escape(versions) + "*"):
            if not stale.name.startswith(self.stem + "."):
                stale.unlink(missing_ok=True)

    def _sidecar(self) -> dict | None:
        """The sidecar, None without one; raises _InvalidEntry when its format, version or a file's size differs."""
        image_file, label_file, sidecar = self.files
        if not sidecar.exists():
            return None
        meta = json.loads(sidecar.read_text())
        if meta.get("format", 1) != FORMAT:
            raise _InvalidEntry(f"sidecar format {meta.get('format', 1)}, expected {FORMAT}")
        if meta["version"] != self.version:
            raise _InvalidEntry(f"version {meta['version']} != {self.version}")
        if image_file.stat().st_size != meta["images_bytes"] or label_file.stat().st_size != meta["labels_bytes"]:
            raise _InvalidEntry("file size differs from the sidecar (truncated?)")
        return meta

    def open(self, source: Fingerprint, warn: bool = True) -> ImageTensors | None:
        """The entry, or None when missing, stale or damaged (then, if ``warn``, one warning line names it and why)."""
        try:
            if (meta := self._sidecar()) is None:
                return None
            if meta["source_digest"] != source.digest:
                raise _InvalidEntry(f"source changed: {source.what}")
            images = _load(self.files[0], meta["shape"], meta["dtype"])
            labels = np.array(_load(self.files[1], [meta["count"]], "int64"))
            return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels))
        except (_InvalidEntry, OSError, ValueError, KeyError) as error:
            if warn:
                log.warning("cache entry %s is invalid (%s): rebuilding it", self.folder / self.stem, _why(error))
            return None

    def verify(self) -> tuple[int | None, str | None]:
        """(images, None) when both files hash to the sidecar's sha256 (read in full), else (None, what is wrong)."""
        try:
            if (meta := self._sidecar()) is None:
                return None, "not cached"
            for path, key in zip(self.files[:2], ("images_sha256", "labels_sha256")):
                if file_digest(path, "sha256") != meta[key]:
                    return None, f"content hash differs: {path.name}"
            return meta["count"], None
        except (_InvalidEntry, OSError, ValueError, KeyError) as error:
            return None, _why(error)

    def open_or_build(self, source: Fingerprint, build: Callable[[], tuple[np.ndarray, np.ndarray]]) -> ImageTensors:
        """The entry, written first from ``build()`` when missing or invalid. ``source``, what ``build`` decodes, is
        taken before it runs, so files changed meanwhile rebuild the entry again. Not locked: callers hold a lock."""
        if (tensors := self.open(source)) is None:
            self.write(source, *build())
            if (tensors := self.open(source)) is None:
                raise OSError(f"the cache entry {self.files[0]} could not be read back")
        return tensors
