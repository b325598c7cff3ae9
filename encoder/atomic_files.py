"""Files written whole or not at all (model files, graphs, checkpoints, caches, the daemon's state files):
the bytes go to a temporary file in the same folder, are flushed to the disk, then renamed over the old
file (atomic on POSIX) and the folder is synced, so a crash or a full disk leaves the previous file, never
an empty or half-written one. The one place for this; service/state_files.py re-exports it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replacing(path: str | Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary stream whose bytes replace ``path`` when the ``with`` ends without an error (flushed, synced,
    renamed into place, file ``mode`` as given: mkstemp's 0600 is wrong for a shared model file); on an
    error the temporary file goes and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with open(temporary, "wb") as stream:  # its ``name`` is the temporary path (a reader may check it)
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8) atomically; OSError (e.g. ENOSPC) leaves the old file."""
    with replacing(path) as stream:
        stream.write(data.encode() if isinstance(data, str) else bytes(data))


def sync_folder(folder: str | Path) -> None:
    """fsync a folder so a rename in it survives a power cut (best effort: some file systems refuse)."""
    try:
        descriptor = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def fsync_file(path: str | Path) -> None:
    """Flush a file written by another library (soundfile) to the disk before it is renamed into place."""
    descriptor = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
