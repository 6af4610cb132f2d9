"""One RTMP play, as the kernel sees it: the :class:`RtmpPlayer` sink and the chunks it writes.

Hot path: a frame's outgoing chunks are built once per outgoing chunk size and shared by every
player (:func:`arcly_trio.protocols.rtmp.media.frame_chunks`, which the RTMP client uses too),
around the publisher's own message body when it came over RTMP (ingest without copies, see
:mod:`arcly_trio.media.flv.tags`); a whole batch's chunks are joined once too
(:meth:`FrameBatch.encoded`) and written to every player of that chunk size with one
``write``. A player on another message stream id gets the same bytes with its id patched into a
12-byte copy of each first chunk header (:func:`~arcly_trio.protocols.rtmp.media.with_stream_id`),
so no value a client chooses multiplies what a frame holds.

The stream's task writes these through the connection's one
:class:`~arcly_trio.workers.egress.Egress` (see :mod:`arcly_trio.workers.egress`); the
connection (:mod:`.connection`) attaches, drains and detaches its players.

A legacy player (``legacy_audio``: it did not announce Opus in ``connect``'s ``fourCcList``, on
an engine with an audio bridge) gets the bridge's AAC of an Opus stream and no Opus: its chunks
are built without the Opus frames, once per batch for every legacy player of a chunk size (a
batch without Opus costs one look per frame, its chunks are the usual ones).

Error policy: nothing here raises into the stream's task: a frame RTMP cannot carry (the
core's :class:`~arcly_trio.core.errors.LocalProtocolError`) is left out of what is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameBatch
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.fanout import Subscriber
from arcly_trio.protocols.rtmp.media import SHARED_STREAM_ID, frame_chunks, with_stream_id
from arcly_trio.workers.egress import Buffer, DirectSink, Egress, Encoded, legacy_audio

__all__ = ["RtmpPlayer"]


class RtmpPlayer(DirectSink):
    """One play of a connection: the kernel's sink for it, written through the connection's
    egress (see :mod:`..egress`). On message stream 1 it shares every batch's chunks with
    every other player of the same chunk size; on another id each frame's first chunk header
    gets a 12-byte copy with the id patched in."""

    __slots__ = ("stream_id", "key", "chunk_size", "attached")

    def __init__(
        self, egress: Egress, stream_id: int, key: StreamKey, chunk_size: int, *, legacy_audio: bool = False
    ) -> None:
        super().__init__(egress)
        self.stream_id = stream_id
        self.key = key
        self.chunk_size = chunk_size
        self.bridged_audio = legacy_audio
        if stream_id == SHARED_STREAM_ID:
            if legacy_audio:
                self.share(("rtmp-legacy", chunk_size), _legacy_batch_chunks, chunk_size)
            else:
                self.share(("rtmp", chunk_size), _batch_chunks, chunk_size)
        self.attached: AbstractAsyncContextManager[Subscriber] | None = None
        """The ``engine.attach`` of this play, exited when it stops."""

    def encode(self, frames: Sequence[Frame], start: int, end: int) -> Encoded:
        if self.bridged_audio:
            frames = legacy_audio(frames[start:end])
            start, end = 0, len(frames)
        return _chunks(frames, start, end, self.chunk_size, self.stream_id)


def _batch_chunks(batch: FrameBatch, chunk_size: int) -> bytes:
    """A whole batch's chunks in one buffer (one copy per batch, then one ``write`` per player)."""
    return b"".join(_chunks(batch, 0, len(batch), chunk_size, SHARED_STREAM_ID)[0])


def _legacy_batch_chunks(batch: FrameBatch, chunk_size: int) -> bytes:
    """:func:`_batch_chunks` without Opus (the usual bytes for a batch that has none)."""
    frames = legacy_audio(batch)
    if frames is batch:
        return batch.encoded(("rtmp", chunk_size), _batch_chunks, chunk_size)
    return b"".join(_chunks(frames, 0, len(frames), chunk_size, SHARED_STREAM_ID)[0])


def _chunks(frames: Sequence[Frame], start: int, end: int, chunk_size: int, stream_id: int) -> Encoded:
    """The chunked messages of ``frames[start:end]`` (each built once per chunk size and kept
    with its frame) on message stream ``stream_id``. A frame RTMP cannot carry is left out."""
    buffers: list[Buffer] = []
    size = 0
    shared = stream_id == SHARED_STREAM_ID
    for index in range(start, end):
        try:
            data = frame_chunks(frames[index], chunk_size)
        except LocalProtocolError:
            continue
        if shared:
            buffers.append(data)
        else:
            buffers += with_stream_id(data, stream_id)
        size += len(data)
    return buffers, size
