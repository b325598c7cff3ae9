"""The IVF lists of an approximate similarity index kept in a file beside the store (`ListFile`), so the
codes (264 B per 256-d window with SQ8: ~3.3 GB for a year of four microphones) live in the page cache,
which the kernel can reclaim, rather than in the daemon's memory.

faiss's `OnDiskInvertedLists` maps the file (MAP_SHARED) and grows it as lists grow; every page a search or
an add touches would stay counted in the daemon's resident memory, so `ListFile.release` unmaps the
pages after each use (madvise MADV_DONTNEED: they stay in the page cache, a later touch maps them back
without reading the disk). The file is made by each index under this process's name and, when the store
closes, either removed or saved under a fixed name with the index (`similarity_saved.py`) to be read back
at the next start.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os
from pathlib import Path
from typing import Any

_serial = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def list_file_path(store: Path, dim: int) -> Path:
    """A new list file's name beside ``store``: ``<store>.similarity-<dim>-<pid>-<n>.ivf`` (one per index)."""
    return store.with_name(f"{store.name}.similarity-{dim}-{os.getpid()}-{next(_serial)}.ivf")


def remove_stale_list_files(store: Path) -> list[Path]:
    """Delete list files beside ``store`` left by processes that are gone (a crash); returns them."""
    removed = []
    for path in store.parent.glob(f"{store.name}.similarity-*.ivf"):
        try:
            pid = int(path.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            path.unlink(missing_ok=True)
            removed.append(path)
        except PermissionError:  # another user's live process
            pass
    return removed


class ListFile:
    """faiss `OnDiskInvertedLists` in a new file at ``path``, attached to a trained IVF index (or, `adopted`,
    the lists of an index read back from a saved one, in the file at ``path``)."""

    def __init__(self, faiss: Any, index: Any, path: Path, adopt: bool = False) -> None:
        self.path = path
        ivf = faiss.extract_index_ivf(index)
        if adopt:  # the index owns its lists; they are mapped from where the file is now
            self.lists = faiss.downcast_InvertedLists(ivf.invlists)
            self.lists.filename = str(path)
            self.lists.do_mmap()
        else:
            path.unlink(missing_ok=True)
            self.lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
            ivf.replace_invlists(self.lists, False)  # this object keeps the lists alive as long as the index
        # faiss would otherwise start 32 threads per search to read the probed lists ahead, and those could
        # touch pages after `release` (the search reads the lists itself, from the page cache)
        self.lists.prefetch_nthread = 0

    @classmethod
    def adopted(cls, faiss: Any, index: Any, path: Path) -> ListFile:
        """The lists of ``index`` (read back with IO_FLAG_SKIP_IVF_DATA) mapped from the file at ``path``."""
        return cls(faiss, index, path, adopt=True)

    @property
    def file_bytes(self) -> int:
        """Size of the file (it grows by doubling; lists keep room to grow)."""
        return int(self.lists.totsize)

    def release(self) -> None:
        """Unmap the file's pages from this process (they stay in the page cache)."""
        if self.lists.ptr is not None and self.lists.totsize > 0:
            _libc.madvise(int(self.lists.ptr), int(self.lists.totsize), mmap.MADV_DONTNEED)

    def remove(self) -> None:
        """Delete the file (the index must not be used after)."""
        self.path.unlink(missing_ok=True)

    def move_to(self, path: Path) -> None:
        """Write the file's changed pages to disk and rename it to ``path`` (the mapping stays valid)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)  # the pages changed through the mapping are the page cache's: fsync writes them
        finally:
            os.close(fd)
        os.replace(self.path, path)
        self.path = path
