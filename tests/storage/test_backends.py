"""Storage backends: the key rules (no escape from the namespace), the protocol's semantics on
both backends, atomic puts, appends, and errors mapped to StorageError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.storage import (
    FileStorage,
    InvalidStorageKey,
    MemoryStorage,
    Storage,
    StorageError,
    StorageNotFound,
    check_key,
)

BAD_KEYS = [
    "",
    "/etc/passwd",
    "//x",
    "../x",
    "a/../../b",
    "a/..",
    "..",
    ".",
    "a/./b",
    "a//b",
    "a/",
    ".hidden",
    "a/.tmp",
    "a\\..\\b",
    "..\\x",
    "a\x00b",
    "a\nb",
    "x" * 2000,
]
GOOD_KEYS = ["a", "live/demo/index.m3u8", "live/demo/6b0-12.ts", "live/demo-20240501T120000Z.flv", "a b/c..d", "ü/ñ"]


@pytest.fixture(params=["memory", "file"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "memory":
        return MemoryStorage()
    return FileStorage(tmp_path / "root")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_check_key_refuses_escapes(key: str) -> None:
    with pytest.raises(InvalidStorageKey):
        check_key(key)


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_check_key_accepts_relative_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_every_operation_refuses_bad_keys(storage: Storage, key: str, tmp_path: Path) -> None:
    for call in (
        lambda: storage.put(key, b"x"),
        lambda: storage.get(key),
        lambda: storage.delete(key),
        lambda: storage.open_append(key),
    ):
        with pytest.raises(InvalidStorageKey):
            await call()
    # Nothing was written outside the root.
    assert not (tmp_path / "x").exists() and not (tmp_path / "b").exists()


async def test_list_refuses_escaping_prefixes(storage: Storage) -> None:
    for prefix in ("../", "/", "a/../", ".."):
        with pytest.raises(InvalidStorageKey):
            await storage.list(prefix)


async def test_put_get_delete_list(storage: Storage) -> None:
    await storage.put("live/a/index.m3u8", b"playlist")
    await storage.put("live/a/1.ts", b"one")
    await storage.put("live/b/1.ts", b"b-one")
    await storage.put("other", b"o")
    assert await storage.get("live/a/1.ts") == b"one"
    assert await storage.list("live/a/") == ["live/a/1.ts", "live/a/index.m3u8"]
    assert await storage.list("live/") == ["live/a/1.ts", "live/a/index.m3u8", "live/b/1.ts"]
    assert await storage.list("live/a/1") == ["live/a/1.ts"]
    assert await storage.list() == ["live/a/1.ts", "live/a/index.m3u8", "live/b/1.ts", "other"]
    await storage.put("live/a/1.ts", b"replaced")
    assert await storage.get("live/a/1.ts") == b"replaced"
    await storage.delete("live/a/1.ts")
    await storage.delete("live/a/1.ts")  # deleting a missing key is not an error
    with pytest.raises(StorageNotFound):
        await storage.get("live/a/1.ts")
    assert await storage.list("live/a/") == ["live/a/index.m3u8"]
    assert await storage.list("nothing/") == []


async def test_append_handle_publishes_on_flush(storage: Storage) -> None:
    handle = await storage.open_append("rec/x.flv")
    await handle.write(b"FLV")
    await handle.write(b"-1")
    await handle.flush()
    assert await storage.get("rec/x.flv") == b"FLV-1"
    await handle.write(b"-2")
    await handle.aclose()
    await handle.aclose()  # idempotent
    assert await storage.get("rec/x.flv") == b"FLV-1-2"
    # Reopening appends.
    handle = await storage.open_append("rec/x.flv")
    await handle.write(b"-3")
    await handle.aclose()
    assert await storage.get("rec/x.flv") == b"FLV-1-2-3"


async def test_file_storage_put_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    await storage.put("a/b.txt", b"1" * 100_000)
    await storage.put("a/b.txt", b"2")
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"2"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.txt"]
    # A leftover temp file (a crash mid-put) is never listed.
    (tmp_path / "a" / ".b.txt.123.tmp").write_bytes(b"partial")
    assert await storage.list() == ["a/b.txt"]


async def test_file_storage_refuses_symlinks_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    storage = FileStorage(root)
    with pytest.raises(InvalidStorageKey):
        await storage.get("link/secret")
    with pytest.raises(InvalidStorageKey):
        await storage.put("link/new", b"x")
    assert not (outside / "new").exists()


async def test_file_storage_delete_prunes_empty_directories(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "root")
    await storage.put("live/demo/1.ts", b"x")
    await storage.delete("live/demo/1.ts")
    assert list((tmp_path / "root").iterdir()) == []


async def test_file_storage_os_errors_become_storage_errors(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "root")
    await storage.put("file", b"x")
    # "file" is a file, so "file/child" cannot be created: an OSError underneath.
    with pytest.raises(StorageError) as info:
        await storage.put("file/child", b"y")
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(StorageError):
        await storage.open_append("file/child")
    with pytest.raises(StorageNotFound):
        await storage.get("file/child")


def test_file_storage_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(StorageError):
        FileStorage(tmp_path / "f")


async def test_memory_storage_cap() -> None:
    storage = MemoryStorage(max_bytes=10)
    await storage.put("a", b"12345")
    await storage.put("a", b"1234567890")  # replacing counts the difference only
    with pytest.raises(StorageError):
        await storage.put("b", b"1")
    await storage.delete("a")
    assert storage.size == 0
    handle = await storage.open_append("rec")
    await handle.write(b"x" * 11)
    with pytest.raises(StorageError):
        await handle.flush()


_key_text = st.lists(st.sampled_from(list("ab./\\\x00 -_%~:ü") + [".."]), max_size=16).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_key_text)
def test_any_key_is_valid_and_inside_the_root_or_refused(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    storage = FileStorage(root)

    async def run() -> None:
        try:
            check_key(key)
        except InvalidStorageKey:
            for backend in (storage, MemoryStorage()):
                with pytest.raises(InvalidStorageKey):
                    await backend.put(key, b"x")
            return
        path = storage.path_of(key)
        assert path.resolve().is_relative_to(root.resolve())
        for backend in (storage, MemoryStorage()):
            try:
                await backend.put(key, b"data")
            except StorageError as exc:  # e.g. a prefix of the key is a file already
                assert not isinstance(exc, InvalidStorageKey)
                continue
            assert await backend.get(key) == b"data"
            assert key in await backend.list()
            await backend.delete(key)

    trio.run(run)


async def test_file_io_does_not_stall_the_event_loop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A slow disk (here: a write that takes 0.3 s) holds a worker thread, not the event loop:
    other tasks keep running meanwhile. Mutant killed: blocking file I/O in ``async def``."""
    import time

    from arcly_trio.storage import FileStorage

    class SlowDisk(FileStorage):
        def _put(self, key: str, data: bytes) -> None:
            time.sleep(0.3)
            super()._put(key, data)

    storage = SlowDisk(tmp_path)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await storage.put("a/b.ts", b"x")
        nursery.cancel_scope.cancel()
    assert ticks >= 5, ticks
    assert await storage.get("a/b.ts") == b"x"
