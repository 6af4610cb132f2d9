"""Pluggable storage for HLS segments, playlists and recordings.

:class:`Storage` is the protocol (put, get, delete, list, open-for-append; see
:mod:`.base`); :class:`MemoryStorage` is the default for HLS, :class:`FileStorage` keeps
objects as files under a directory and writes them atomically where it can.
"""

from arcly_trio.storage.base import (
    MAX_KEY_LENGTH,
    AppendHandle,
    InvalidStorageKey,
    Storage,
    StorageError,
    StorageNotFound,
    check_key,
    check_prefix,
)
from arcly_trio.storage.filesystem import FileStorage
from arcly_trio.storage.memory import MemoryStorage

__all__ = [
    "Storage",
    "AppendHandle",
    "StorageError",
    "InvalidStorageKey",
    "StorageNotFound",
    "check_key",
    "check_prefix",
    "MAX_KEY_LENGTH",
    "MemoryStorage",
    "FileStorage",
]
