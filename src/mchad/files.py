"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every file the project writes that a killed process must not leave half-written (cache
entries, downloads, provenance, the sweeper's best parameters) goes through
:func:`atomic_file`: the bytes go to a temporary file in the same directory
(``.<name>.<random>.part``), are flushed to disk, and the file is renamed over the
final name. A killed writer leaves only its ``.part`` file, which the next writer
under the same lock removes (:func:`remove_parts`).
"""

from __future__ import annotations

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
