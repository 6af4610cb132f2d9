"""The storage protocol: where HLS segments, playlists and recordings go.

A :class:`Storage` maps keys to bytes. Keys are relative, ``/``-separated paths such as
``live/demo/index.m3u8`` or ``live/demo-20240501T120000Z.flv``; :func:`check_key` says which
keys are valid, and every backend applies it, so a key that came from a URL or a stream name
can never escape the backend's namespace (no absolute paths, no ``..``, no hidden names).

Operations (all async, so a backend may do network I/O; the built-in ones do not block):

* ``put(key, data)`` stores a whole object. Backends that can make it atomic do (the
  filesystem backend writes a temporary file and renames it), so a reader sees the old object
  or the new one, never a torn one.
* ``get(key)`` returns the bytes; :class:`StorageNotFound` when the key holds nothing.
* ``delete(key)`` removes the object; deleting a missing key is not an error.
* ``list(prefix)`` returns the sorted keys that start with ``prefix``.
* ``open_append(key)`` returns an :class:`AppendHandle` that grows one object in place
  (recordings): what was ``flush``-ed is durable as far as the backend can make it, even if
  the process dies before ``aclose``.

Error policy: an invalid key raises :class:`InvalidStorageKey`; a missing object on ``get``
raises :class:`StorageNotFound`; any backend failure (disk full, permission denied, I/O error)
raises :class:`~arcly_trio.core.errors.StorageError` with the underlying error as its
``__cause__``. Nothing else escapes a backend.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from arcly_trio.core.errors import StorageError

__all__ = [
    "Storage",
    "AppendHandle",
    "StorageError",
    "InvalidStorageKey",
    "StorageNotFound",
    "check_key",
    "check_prefix",
    "MAX_KEY_LENGTH",
]

#: The longest key accepted (in characters).
MAX_KEY_LENGTH = 1024

# A segment: no separator or backslash, no control character, not starting with a dot (which
# rules out "." and ".." and keeps the names backends use for temporary files apart).
_SEGMENT = re.compile(r"[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*")
_VALID_KEY = re.compile(r"[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*(?:/[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*)*")
"""A whole valid key in one match (every segment a :data:`_SEGMENT`): the common case of
:func:`check_key` without splitting; a key it does not match is looked at piece by piece for
the reason."""


class InvalidStorageKey(StorageError):
    """``key`` is not a valid storage key (see :func:`check_key`)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid storage key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class StorageNotFound(StorageError):
    """Nothing is stored under ``key``."""

    def __init__(self, key: str) -> None:
        super().__init__(f"nothing stored under {key!r}")
        self.key = key


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid storage key, else raise :class:`InvalidStorageKey`.

    Valid: a non-empty ``/``-separated relative path of at most :data:`MAX_KEY_LENGTH`
    characters whose segments are non-empty, contain no backslash or control character and do
    not start with ``.`` (so no ``.``, ``..`` or hidden names). No leading or trailing ``/``.
    """
    if not isinstance(key, str):
        raise InvalidStorageKey(repr(key), "not a string")
    if len(key) <= MAX_KEY_LENGTH and _VALID_KEY.fullmatch(key):
        return key
    if not key:
        raise InvalidStorageKey(key, "empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidStorageKey(key[:64] + "...", f"longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/"):
        raise InvalidStorageKey(key, "absolute keys are not allowed")
    for segment in key.split("/"):
        if not segment:
            raise InvalidStorageKey(key, "empty path segment")
        if segment in (".", ".."):
            raise InvalidStorageKey(key, "'.' and '..' segments are not allowed")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidStorageKey(
                key, f"segment {segment!r} starts with '.' or holds a backslash or control character"
            )
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid ``list`` prefix: empty, or a valid key, or a valid
    key followed by ``/``. Raises :class:`InvalidStorageKey` otherwise."""
    if prefix == "":
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


@runtime_checkable
class AppendHandle(Protocol):
    """An object being grown in place (see :meth:`Storage.open_append`).

    ``write`` may buffer; ``flush`` hands what was written to the backend (for files: to the
    operating system, and to the disk if the backend was made with ``fsync=True``). Every
    method raises ``StorageError`` when the backend fails; after that the handle should be
    closed. ``aclose`` flushes and is idempotent.
    """

    key: str

    async def write(self, data: bytes) -> None: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Storage(Protocol):
    """A key -> bytes store (see the module docstring for the contract)."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...

    async def list(self, prefix: str = "") -> list[str]: ...

    async def open_append(self, key: str) -> AppendHandle: ...
