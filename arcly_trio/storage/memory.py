"""An in-memory :class:`~.base.Storage`: the default home of HLS segments and playlists.

Objects are immutable ``bytes`` replaced whole on ``put`` (so a reader never sees a torn one).
An append handle grows a private buffer and publishes it on every ``flush``.

Error policy: invalid keys raise ``InvalidStorageKey``; ``get`` of a missing key raises
``StorageNotFound``; with ``max_bytes`` set, a ``put`` or ``flush`` that would take the total
over it raises ``StorageError`` and stores nothing.
"""

from __future__ import annotations

import trio

from arcly_trio.storage.base import AppendHandle, StorageError, StorageNotFound, check_key, check_prefix

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """Keys and bytes in a dict, optionally capped at ``max_bytes`` in total."""

    def __init__(self, *, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        # Appended objects are kept as the bytearray their handle grows.
        self._objects: dict[str, bytes | bytearray] = {}
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes stored in total."""
        return self._size

    def __len__(self) -> int:
        return len(self._objects)

    def _store(self, key: str, data: bytes | bytearray) -> None:
        old = self._objects.get(key)
        new_size = self._size + len(data) - (len(old) if old is not None else 0)
        if self.max_bytes is not None and new_size > self.max_bytes:
            raise StorageError(
                f"memory storage full: storing {key!r} ({len(data)} bytes) would exceed {self.max_bytes} bytes"
            )
        self._objects[key] = data
        self._size = new_size

    async def put(self, key: str, data: bytes) -> None:
        check_key(key)
        await trio.lowlevel.checkpoint()
        self._store(key, bytes(data))

    async def get(self, key: str) -> bytes:
        check_key(key)
        await trio.lowlevel.checkpoint()
        try:
            value = self._objects[key]
        except KeyError:
            raise StorageNotFound(key) from None
        return value if isinstance(value, bytes) else bytes(value)

    def get_now(self, key: str) -> bytes | None:
        """What :meth:`get` gives, without waiting (no checkpoint), or ``None`` when nothing is
        stored under ``key`` (``InvalidStorageKey`` as :meth:`get`): for answers made
        synchronously (the HTTP worker's session lane, see :mod:`arcly_trio.protocols.http.quick`)."""
        check_key(key)
        value = self._objects.get(key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else bytes(value)

    async def delete(self, key: str) -> None:
        check_key(key)
        await trio.lowlevel.checkpoint()
        old = self._objects.pop(key, None)
        if old is not None:
            self._size -= len(old)

    async def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        await trio.lowlevel.checkpoint()
        return sorted(key for key in self._objects if key.startswith(prefix))

    async def open_append(self, key: str) -> AppendHandle:
        check_key(key)
        await trio.lowlevel.checkpoint()
        existing = self._objects.get(key)
        target = existing if isinstance(existing, bytearray) else bytearray(existing or b"")
        self._store(key, target)
        return _MemoryAppender(self, key, target)

    def _grow(self, key: str, target: bytearray, data: bytes) -> None:
        if self.max_bytes is not None and self._size + len(data) > self.max_bytes:
            raise StorageError(
                f"memory storage full: appending {len(data)} bytes to {key!r} would exceed {self.max_bytes} bytes"
            )
        target += data
        if self._objects.get(key) is target:
            self._size += len(data)


class _MemoryAppender:
    """Grows one object of a :class:`MemoryStorage` in place; ``flush`` publishes what was
    written since the last flush (appending to the stored buffer, never copying it)."""

    def __init__(self, storage: MemoryStorage, key: str, target: bytearray) -> None:
        self.key = key
        self._storage = storage
        self._target = target
        self._pending: list[bytes] = []
        self._closed = False

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise StorageError(f"append handle of {self.key!r} is closed")
        self._pending.append(bytes(data))

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._storage._grow(self.key, self._target, data)

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self.flush()
        finally:
            self._closed = True
