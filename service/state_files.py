"""Small state files the daemon keeps beside its store (drift baselines, the custom-sound library, the clips'
own files): written whole or not at all, through the project's one atomic writer (encoder/atomic_files.py:
temporary file, fsync, rename, folder sync), so a crash or a full disk leaves the previous file."""

from __future__ import annotations

from encoder.atomic_files import fsync_file, sync_folder, write_atomically

__all__ = ["fsync_file", "sync_folder", "write_atomically"]
