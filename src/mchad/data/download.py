"""Downloads with checksums and archive extraction, each under a file lock (:func:`mchad.files.file_lock`).

Several runs (seeds of a sweep) may start at once on the same data directory. A download
goes to a unique temporary name in the destination folder, is verified (size, checksum),
and only then renamed to its final name, so no run ever reads a half-written file; a
per-file lock makes the second run wait for the first run's download instead of
starting its own. Extraction writes a marker file last, so a folder whose extraction was
interrupted is recognised and extracted again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mchad.errors import ConfigError
from mchad.files import atomic_file, file_lock, remove_parts

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: where from, its name on disk, and how to recognise it.

    Give ``sha256`` or ``md5`` (or both); ``size`` in bytes is checked when known.
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not (self.md5 or self.sha256):
            raise ValueError(f"RemoteFile {self.filename} needs an md5 or sha256 checksum")

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 else "md5"

    @property
    def checksum(self) -> str:
        return (self.sha256 or self.md5).lower()


def stream_digest(f: BinaryIO, algorithm: str) -> str:
    """Hex digest of the rest of an open binary file, read in chunks."""
    digest = hashlib.new(algorithm)
    while chunk := f.read(CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return stream_digest(f, algorithm)


def mismatch(remote: RemoteFile, path: Path) -> str | None:
    """What is wrong with ``path`` as a copy of ``remote`` (size, then checksum), or None if it matches."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"size {size} bytes, expected {remote.size}"
    actual = file_digest(path, remote.algorithm)
    if actual != remote.checksum:
        return f"{remote.algorithm} {actual}, expected {remote.checksum}"
    return None


def _download(remote: RemoteFile, dest: Path) -> None:
    """Stream ``remote`` into ``dest`` atomically; verified (size, checksum) before it takes the name."""
    try:
        with atomic_file(dest) as out:
            with urllib.request.urlopen(remote.url, timeout=TIMEOUT_S) as response:
                shutil.copyfileobj(response, out, CHUNK_BYTES)
            out.flush()
            problem = mismatch(remote, Path(out.name))
            if problem:
                raise ConfigError(
                    f"the download of {remote.filename} from {remote.url} is corrupted ({problem}): "
                    f"try again, or download it by hand and save it as {dest}"
                )
    except ConfigError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = " ".join(str(getattr(error, "reason", error)).split())
        raise ConfigError(
            f"cannot download {remote.url} ({reason}): download it by hand and save it as {dest}, "
            "or point the data set's root at a local copy"
        ) from error


def fetch(remote: RemoteFile, dest_dir: str | Path, download: bool = True) -> Path:
    """Download ``remote`` into ``dest_dir`` once and verify it; return its path.

    An existing file is verified, not downloaded again. A corrupted existing file is an
    error (it may be a copy placed there by hand), never silently replaced. With
    ``download=False`` a missing file is an error naming both fixes. Temporary files of
    earlier downloads that were killed are removed before downloading.
    """
    dest = Path(dest_dir) / remote.filename
    with file_lock(dest):
        if dest.exists():
            problem = mismatch(remote, dest)
            if problem:
                raise ConfigError(f"{dest} is corrupted ({problem}): delete it to download it again from {remote.url}")
            return dest
        if not download:
            raise ConfigError(
                f"{dest} not found: set data.download=true to download it from {remote.url}, "
                "or point the data set's root at a local copy"
            )
        # a run killed mid-download leaves its temporary file; under the lock none is still being written
        remove_parts(dest.parent, f"{dest.name}.")
        log.info("downloading %s to %s", remote.url, dest)
        _download(remote, dest)
    return dest


def extraction_marker(archive: Path, dest_dir: Path) -> Path:
    return dest_dir / f".{archive.name}.extracted"


def extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extract a .tar(.gz/.bz2/.xz), .zip or single-file .gz archive into ``dest_dir``.

    A marker file written after the last member marks the extraction complete; without
    it (an interrupted run) the archive is extracted again over what is there.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker = extraction_marker(archive, dest_dir)
    with file_lock(marker):
        if marker.exists():
            return dest_dir
        dest_dir.mkdir(parents=True, exist_ok=True)
        log.info("extracting %s to %s", archive, dest_dir)
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                tar.extractall(dest_dir, filter="data")
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest_dir)
        elif archive.suffix == ".gz":
            with gzip.open(archive, "rb") as src, open(dest_dir / archive.stem, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK_BYTES)
        else:
            raise ConfigError(f"{archive} is not a tar, zip or gz archive: delete it to download it again")
        marker.touch()
    return dest_dir
