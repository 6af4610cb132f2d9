"""The CMAF packaging's output, byte for byte: every object it stores, in order, against digests
recorded before the packaging was optimised (2026-12-07, ``main`` at ``cd7d128``).

One :class:`~arcly_trio.services._hls_cmaf.CmafPackaging` per variant (LL-HLS, fMP4 HLS, LL-HLS
with a DVR window, muxed LL-HLS) packages 30 s of the real clip
(:func:`~arcly_trio.testing.frames.real_stream`) with a fixed clock, in batches of varying
size (as the service's loop takes them), through a publisher restart and an early drop
(the byte cap's). A host that records every store and expiry stands in for the service; the
digest covers each key, its bytes, and the expiries. A change to what is packaged (a part's
``moof``, a playlist's text, the MPD) changes the digest: prove it correct, then record the new
one here.

The query pieces of every stored list are compared with a full cut (:func:`query_pieces`) when
read, as the routes read them.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from typing import Any

import pytest
import trio

from arcly_trio.core.keys import StreamKey
from arcly_trio.services import _hls_dvr
from arcly_trio.services._hls_cmaf import CmafPackaging
from arcly_trio.services._hls_dvr import query_pieces
from arcly_trio.services._hls_held import HeldBytes
from arcly_trio.testing.frames import real_stream

SECONDS = 30
BATCHES = (1, 3, 7, 2, 12, 1, 5)


class RecordingHost:
    """A :class:`~arcly_trio.services._hls_base.PackagingHost` that records what it is asked."""

    target_duration = 2.0
    part_duration = 1 / 3
    window = 6
    max_segment_bytes = 64 * 1024 * 1024
    part_delete_delay = 6.0

    def __init__(self) -> None:
        self.live: dict[str, Any] = {}
        self.digest = hashlib.sha256()
        self.stores = 0
        self.objects: dict[str, bytes] = {}

    async def store(self, key: str, data: bytes, held: HeldBytes | None = None) -> None:
        assert isinstance(data, bytes)
        self.digest.update(f"put {key} {len(data)}\n".encode())
        self.digest.update(data)
        self.stores += 1
        self.objects[key] = data
        if held is not None:
            held.stored(key, len(data))

    def expire(self, key: str, delay: float | None = None, held: HeldBytes | None = None) -> None:
        self.digest.update(f"expire {key} {delay}\n".encode())

    def lists_changed(self) -> None:
        pass


async def package(monkeypatch: pytest.MonkeyPatch, reads: bool = True, **options: Any) -> RecordingHost:
    host = RecordingHost()
    packaging = CmafPackaging(host, StreamKey("live", "golden"), "t0", **options)  # type: ignore[arg-type]
    clock = iter(itertools.count())
    now = [1.8e9]
    monkeypatch.setattr("arcly_trio.services._hls_cmaf.time.time", lambda: now[0])
    frames = []
    for frame in real_stream():
        if frame.dts > SECONDS * 1000:
            break
        frames.append(frame)
    sizes = itertools.cycle(BATCHES)
    at = 0
    while at < len(frames):
        batch = frames[at : at + next(sizes)]
        events: list[object] = []
        if at <= len(frames) // 2 < at + len(batch):
            events += packaging.discontinuity()
        for frame in batch:
            now[0] = 1.8e9 + frame.dts / 1000 + next(clock) * 1e-6
            events += packaging.push(frame)
        await packaging.apply(events)
        if at <= 2 * len(frames) // 3 < at + len(batch):
            assert await packaging.drop_oldest()
        for name, pieces in packaging.pieces.items():  # as a request reads them
            if reads and name in ("video.m3u8", "index.m3u8") and at % 5 == 0:
                data = host.objects[f"live/golden/{name}"]
                assert pieces.get(data) == query_pieces(data)
        at += len(batch)
    await packaging.apply(packaging.finish())
    for name, pieces in packaging.pieces.items() if reads else ():
        data = host.objects[f"live/golden/{name}"]
        assert pieces.get(data) == query_pieces(data)
    return host


GOLDEN = {
    "dvr": "6f15da118d14bb2a0aa772bbcc6c9bb01b92aa673a9e06583928a8c3a6d9b815 675",
    "fmp4": "a3758a89c594b3e18ac1bbbd5988f23caad4544e11957890cd6d1a250979dff5 287",
    "ll": "9d542afdc1da443b9d0c582e5b893c0a77e78b5bf280127cda6ba6c2157e3a4d 467",
    "muxed": "198213d698bbf50bebb135095c833c4bc43ab9168185f489ef295cd8424f4117 225",
}
OPTIONS: dict[str, dict[str, Any]] = {
    "ll": {"low_latency": True},
    "fmp4": {"low_latency": False},
    "dvr": {"low_latency": True, "window": 40},
    "muxed": {"low_latency": True, "muxed": True},
}


@pytest.mark.parametrize("variant", sorted(GOLDEN))
def test_the_packaging_stores_what_it_stored_before(monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    host = trio.run(functools.partial(package, monkeypatch, **OPTIONS[variant]))
    assert host.stores > 100
    assert f"{host.digest.hexdigest()} {host.stores}" == GOLDEN[variant]


@pytest.mark.parametrize("variant", ["ll", "dvr"])
def test_lists_nobody_reads_are_never_cut_for_queries(monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    """The cut where players' queries go is made when a request first reads a render, not at
    each render (once per part): packaging nobody watches cuts nothing (it cut every list at
    every render before, 12 % of the packaging's CPU)."""
    calls = [0]
    original = _hls_dvr.query_pieces

    def counting(playlist: bytes) -> list[bytes]:
        calls[0] += 1
        return original(playlist)

    monkeypatch.setattr(_hls_dvr, "query_pieces", counting)
    host = trio.run(functools.partial(package, monkeypatch, reads=False, **OPTIONS[variant]))
    assert f"{host.digest.hexdigest()} {host.stores}" == GOLDEN[variant]
    assert calls[0] == 0
