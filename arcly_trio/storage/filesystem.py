"""A :class:`~.base.Storage` in a directory: keys are relative paths under ``root``.

``put`` is atomic: the data goes to a temporary file in the target's directory (a hidden name
that no valid key can take, and that ``list`` skips), is flushed (and ``fsync``-ed with
``fsync=True``), then renamed over the target. ``open_append`` writes the file in place
(recordings must be readable while they grow and complete after a crash): every ``flush``
hands the bytes to the operating system, so they survive the death of this process.

File I/O runs in worker threads (``trio.to_thread.run_sync``), at most ``max_threads`` at a time
per storage (a ``CapacityLimiter``: other calls wait their turn in trio), so a slow disk never
stalls the event loop and the streams on it. A call already handed to a thread finishes even if
its caller is cancelled (the call then raises ``Cancelled`` after the I/O is done).

Keys never escape ``root``: :func:`~.base.check_key` refuses absolute keys, ``..`` and hidden
names, and the resolved path of every key is checked to lie under the resolved root (a symlink
inside the root that points elsewhere is refused too).

Error policy: ``InvalidStorageKey`` for a refused key; ``StorageNotFound`` from ``get`` of a
missing file; ``StorageError`` (with the ``OSError`` as ``__cause__``) for every file-system
failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from io import BufferedWriter
from pathlib import Path
from typing import Any, TypeVar

import trio

from arcly_trio.storage.base import (
    AppendHandle,
    InvalidStorageKey,
    StorageError,
    StorageNotFound,
    check_key,
    check_prefix,
)

__all__ = ["FileStorage"]

T = TypeVar("T")


class FileStorage:
    """Objects as files under ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False, max_threads: int = 4) -> None:
        try:
            path = Path(root)
            path.mkdir(parents=True, exist_ok=True)
            self.root = path.resolve(strict=True)
        except OSError as exc:
            raise StorageError(f"cannot use {str(root)!r} as a storage directory: {exc}") from exc
        self.fsync = fsync
        self._limiter = trio.CapacityLimiter(max_threads)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread (at most ``max_threads`` at once)."""
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    def __repr__(self) -> str:
        return f"FileStorage({str(self.root)!r})"

    def path_of(self, key: str) -> Path:
        """The file that holds ``key`` (``InvalidStorageKey`` if it would leave the root)."""
        check_key(key)
        path = self.root.joinpath(*key.split("/"))
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise InvalidStorageKey(key, f"cannot be resolved: {exc}") from exc
        if resolved != path or not resolved.is_relative_to(self.root):
            raise InvalidStorageKey(key, "resolves outside the storage directory")
        return path

    def _make_parent(self, key: str, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the directory of {key!r}: {exc}") from exc
        # A component of the parent may have been a symlink created meanwhile: check again.
        self.path_of(key)

    async def put(self, key: str, data: bytes) -> None:
        await self._run(self._put, key, data)

    def _put(self, key: str, data: bytes) -> None:
        path = self.path_of(key)
        self._make_parent(key, path)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(temp, "wb") as file:
                file.write(data)
                file.flush()
                if self.fsync:
                    os.fsync(file.fileno())
            os.replace(temp, path)
        except OSError as exc:
            try:
                temp.unlink(missing_ok=True)
            except OSError:
                pass
            raise StorageError(f"cannot write {key!r}: {exc}") from exc

    async def get(self, key: str) -> bytes:
        return await self._run(self._get, key)

    def _get(self, key: str) -> bytes:
        path = self.path_of(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StorageNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc}") from exc

    async def delete(self, key: str) -> None:
        await self._run(self._delete, key)

    def _delete(self, key: str) -> None:
        path = self.path_of(key)
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc}") from exc
        # Remove directories left empty, up to (not including) the root.
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    async def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        return await self._run(self._list, prefix)

    def _list(self, prefix: str) -> list[str]:
        # Walk only the directory the prefix names (its part up to the last "/").
        base = prefix.rpartition("/")[0]
        start = self.root.joinpath(*base.split("/")) if base else self.root
        keys: list[str] = []
        try:
            if not start.resolve().is_relative_to(self.root):
                raise InvalidStorageKey(prefix, "resolves outside the storage directory")
            for directory, dirnames, filenames in os.walk(start):
                dirnames[:] = [name for name in dirnames if not name.startswith(".")]
                relative = Path(directory).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith("."):
                        continue
                    key = name if relative == "." else f"{relative}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
        except OSError as exc:
            raise StorageError(f"cannot list {prefix!r}: {exc}") from exc
        return sorted(keys)

    async def open_append(self, key: str) -> AppendHandle:
        return await self._run(self._open_append, key)

    def _open_append(self, key: str) -> AppendHandle:
        path = self.path_of(key)
        self._make_parent(key, path)
        try:
            file = open(path, "ab")
        except OSError as exc:
            raise StorageError(f"cannot open {key!r} for appending: {exc}") from exc
        return _FileAppender(key, file, self.fsync, self._run)


class _FileAppender:
    """A file opened for appending; ``flush`` pushes the buffer to the operating system. Every
    call runs in the storage's worker threads."""

    def __init__(self, key: str, file: BufferedWriter, fsync: bool, run: Callable[..., Awaitable[Any]]) -> None:
        self.key = key
        self._file = file
        self._fsync = fsync
        self._run = run

    async def write(self, data: bytes) -> None:
        await self._run(self._write, data)

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except (OSError, ValueError) as exc:  # ValueError: the file is closed
            raise StorageError(f"cannot write {self.key!r}: {exc}") from exc

    async def flush(self) -> None:
        await self._run(self._flush)

    def _flush(self) -> None:
        try:
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot flush {self.key!r}: {exc}") from exc

    async def aclose(self) -> None:
        await self._run(self._close)

    def _close(self) -> None:
        file = self._file
        if file.closed:
            return
        try:
            file.flush()
            if self._fsync:
                os.fsync(file.fileno())
        except OSError as exc:
            raise StorageError(f"cannot flush {self.key!r}: {exc}") from exc
        finally:
            try:
                file.close()
            except OSError:
                pass
