"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every file the project writes that a killed process must not leave half-written (cache
entries, downloads, provenance, the sweeper's best parameters) goes through
:func:`atomic_file`: the bytes go to a temporary file in the same directory
(``.<name>.<random>.part``), are flushed to disk, and the file is renamed over the
final name. A killed writer leaves only its ``.part`` file, which the next writer
under the same lock removes (:func:`remove_parts`). :func:`file_lock` is that lock, for writers
that wait their turn (downloads, extractions, cache entries, a tracking store's first open).
"""

from __future__ import annotations

import fcntl
import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PART_SUFFIX = ".part"


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; renamed to ``path`` when the block ends without error.

    On an exception (including a failed check inside the block) the temporary file is
    removed and ``path`` is left as it was. ``.name`` is the temporary file's path, so the
    block may check what it wrote before it is renamed. Permissions are those of a plain
    ``open()`` under the process's umask (``mkstemp``'s 0600 would hide shared data sets
    and run directories from colleagues).
    """
    handle, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART_SUFFIX)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)
    os.close(handle)
    try:
        with open(part, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    finally:
        Path(part).unlink(missing_ok=True)


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8) to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(content.encode() if isinstance(content, str) else content)


def remove_parts(folder: Path, prefix: str = "") -> None:
    """Remove the temporary files killed writers left in ``folder`` for files whose names start with ``prefix``.

    Only under the lock that every writer of those files holds, so none is still being written.
    """
    for part in folder.glob(f".{glob.escape(prefix)}*{PART_SUFFIX}"):
        part.unlink(missing_ok=True)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an inter-process lock guarding ``path``: the file ``.<name>.lock`` beside it, there only while held.

    Written here because filelock's ``FileLock`` leaves its lock file behind (a refused run would
    leave one per data set in ``data/``), and deleting that file after releasing it would let
    two processes lock two different files of one name. This lock deletes its file while still
    holding it, and a process that waited on a deleted file sees that the name now points
    elsewhere (another inode) and locks again. An OS lock (``flock``) dies with its process.
    """
    lock = path.parent / f".{path.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(handle).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(handle)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(handle)
