"""FindSimilar's IVF index kept beside the store between runs, so a start reads it back and adds only the
windows stored since, instead of rebuilding it from every stored embedding (591-724 s for a year of four
microphones, docs/performance.md).

Two files per embedding dimension: the lists (`ListFile`'s file, renamed) ``<store>.similarity-<dim>.lists``
and the rest ``<store>.similarity-<dim>.index`` (an .npz: the faiss index without its list data, the mic of
each window, and the marker: the highest window id loaded and a digest of its stored embedding, so an index
is never joined to another store's windows). Crash safety: the .index file is written last (temporary file,
fsync, rename, fsync of the folder) after the lists file is fsynced and renamed, and it is deleted before
the restored lists file is changed; so while an .index file exists its lists file is the one it describes,
and after a crash there is none and the index is rebuilt. Copying the lists file (gigabytes at a year)
at every stop instead was not an option.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.config import SimilarityIndexConfig

#: Bumped when what is saved changes; an index saved by another version is rebuilt.
SAVED_VERSION = 1


class SavedIndexError(Exception):
    """A saved index cannot be used (missing, damaged, of another store or config); the message says why."""


@dataclass(frozen=True)
class Marker:
    """The highest window id an index holds every row up to, and a digest of that window's stored embedding."""

    window_id: int
    digest: str


def embedding_digest(blob: bytes) -> str:
    """A short digest of a stored embedding blob (identifies a window of one store)."""
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def saved_paths(store: Path, dim: int) -> tuple[Path, Path]:
    """(lists file, index file) of the saved index of dimension ``dim`` beside ``store``."""
    return (store.with_name(f"{store.name}.similarity-{dim}.lists"),
            store.with_name(f"{store.name}.similarity-{dim}.index"))


def saved_dims(store: Path) -> list[int]:
    """Dimensions with a saved index file beside ``store``."""
    dims = []
    for path in store.parent.glob(f"{store.name}.similarity-*.index"):
        try:
            dims.append(int(path.name[len(store.name) + len(".similarity-"):-len(".index")]))
        except ValueError:
            continue
    return sorted(dims)


def remove_unfinished(store: Path) -> None:
    """Delete the temporary index files of saves beside ``store`` that a crash cut short (never read back)."""
    for stale in store.parent.glob(f"{store.name}.similarity-*.index.*.tmp"):
        stale.unlink(missing_ok=True)


def discard(store: Path, dim: int) -> None:
    """Delete the saved index of ``dim`` (both files), if any."""
    for path in reversed(saved_paths(store, dim)):  # the index file first: without it the lists mean nothing
        path.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(ivf: Any, store: Path, marker: Marker, dims: list[int]) -> None:
    """Save ``ivf`` (an `IvfIndex` with its lists in a file) beside ``store`` holding every row up to ``marker``,
    one of the indexes of ``dims`` saved together; its lists file is renamed, so the index must not be used after."""
    lists_path, index_path = saved_paths(store, ivf.dim)
    index_path.unlink(missing_ok=True)  # a crash from here on leaves no index file, so nothing half-saved is read
    ivf.list_file.move_to(lists_path)
    _fsync_folder(store.parent)
    header = {"version": SAVED_VERSION, "dim": ivf.dim, "nlist": ivf.config.nlist, "rows": len(ivf),
              "marker": marker.window_id, "digest": marker.digest, "dims": dims,
              "lists_inode": os.stat(lists_path).st_ino, "lists_bytes": os.stat(lists_path).st_size}
    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
             faiss=ivf.serialized(), **ivf.mics.state())
    temporary = index_path.with_name(f"{index_path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as out:
        out.write(buffer.getbuffer())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, index_path)
    _fsync_folder(store.parent)


def claim(store: Path, dim: int, working: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Take the saved index of ``dim`` for this process: its lists file renamed to ``working`` and the index
    file read and deleted (so nothing changed from now on is ever read back as saved); returns (header,
    arrays). SavedIndexError says why there is none to take."""
    lists_path, index_path = saved_paths(store, dim)
    try:
        content = index_path.read_bytes()
    except FileNotFoundError:
        lists_path.unlink(missing_ok=True)
        raise SavedIndexError("no saved index (the last run did not close the store, or never built one)") from None
    try:
        os.replace(lists_path, working)  # only one process can take it
    except FileNotFoundError:
        index_path.unlink(missing_ok=True)
        raise SavedIndexError("the saved index has no lists file") from None
    index_path.unlink(missing_ok=True)
    _fsync_folder(store.parent)
    try:
        with np.load(io.BytesIO(content)) as saved:
            arrays = {name: saved[name] for name in saved.files}
        header = json.loads(arrays.pop("header").tobytes())
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SavedIndexError(f"the saved index file is damaged ({type(exc).__name__}: {exc})") from None
    return header, arrays


def check_header(header: dict, dim: int, config: SimilarityIndexConfig, lists: Path) -> None:
    """SavedIndexError unless ``header`` is of this version, dimension and list count, and ``lists`` is the
    file it was saved with."""
    if header.get("version") != SAVED_VERSION:
        raise SavedIndexError(f"saved by another version ({header.get('version')}, this one reads {SAVED_VERSION})")
    if header.get("dim") != dim or header.get("nlist") != config.nlist:
        raise SavedIndexError(f"saved with {header.get('nlist')} lists of dimension {header.get('dim')}; "
                              f"the config asks for {config.nlist} lists")
    found = os.stat(lists)
    if (found.st_ino, found.st_size) != (header.get("lists_inode"), header.get("lists_bytes")):
        raise SavedIndexError("its lists file is not the one it was saved with")
