"""Frames -> one FLV byte stream, for HTTP-FLV, WebSocket-FLV and recordings (sans-IO).

:class:`FlvStreamWriter` writes the 13-byte FLV header, then the tag of every frame. Tags come
from :func:`arcly_trio.media.frame_to_tag`, which builds a frame's tag once and keeps it
with the frame, so every HTTP-FLV viewer, WebSocket-FLV viewer and recording of a stream shares
the same bytes.

The header's ``hasAudio``/``hasVideo`` flags matter to players (flv.js waits for a track the
header announces). They are the union of what the caller knows already (``has_audio`` /
``has_video``: the stream's known codecs) and what the first frames show: the onMetaData
frame's ``audiocodecid``/``videocodecid`` (or ``hasAudio``/``hasVideo``) fields, and the
kinds of the frames seen. So the header waits, holding the first frames, until the flags are
known: a metadata frame that names the tracks, the first media frame that is not a config, or
``max_pending`` held frames, whichever comes first (or :meth:`FlvStreamWriter.finish`).

Error policy: never raises. A frame FLV cannot carry (``frame_to_tag`` raises
``LocalProtocolError``: an unknown codec, an oversized body) is skipped and counted in
:attr:`FlvStreamWriter.skipped`; unreadable metadata is treated as saying nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import amf0
from arcly_trio.media.flv.container import file_header, frame_to_tag

__all__ = ["FlvStreamWriter", "frame_tags", "metadata_tracks"]

_VIDEO = FrameKind.VIDEO
_AUDIO = FrameKind.AUDIO
_DATA = FrameKind.DATA
_TRACKS_KEY = ("flv-tracks",)


def metadata_tracks(payload: bytes) -> tuple[bool | None, bool | None]:
    """(has audio, has video) as an onMetaData body says; ``None`` where it says nothing.

    A track counts as announced when its codec id field is present (``audiocodecid``,
    ``videocodecid``) or its ``hasAudio``/``hasVideo`` field is true. Never raises.
    """
    try:
        values = amf0.decode(payload)
    except RemoteProtocolError:
        return None, None
    fields = next((value for value in values if isinstance(value, dict)), None)
    if fields is None:
        return None, None

    def announced(codec_field: str, flag_field: str) -> bool | None:
        if fields.get(codec_field) not in (None, amf0.UNDEFINED, "", 0, 0.0) or fields.get(flag_field) is True:
            return True
        if codec_field in fields or flag_field in fields:
            return False
        return None

    return announced("audiocodecid", "hasAudio"), announced("videocodecid", "hasVideo")


def _frame_tracks(frame: Frame) -> tuple[bool | None, bool | None]:
    return metadata_tracks(frame.payload)


class FlvStreamWriter:
    """Turns successive batches of frames into the bytes of one FLV stream.

    Call :meth:`write` with each batch (it returns the bytes to send, possibly empty while the
    header waits) and :meth:`finish` at the end (the held frames, if the header was still
    waiting); :meth:`write_parts` and :meth:`finish_parts` give the same bytes as a list of
    buffers (the frames' shared tags themselves, for a ``writev``). See the module docstring
    for how the header flags are chosen.
    """

    def __init__(self, *, has_audio: bool = False, has_video: bool = False, max_pending: int = 32) -> None:
        self._audio = has_audio
        self._video = has_video
        self._pending: list[Frame] | None = []
        self.max_pending = max_pending
        self.flags: tuple[bool, bool] | None = None
        """(hasAudio, hasVideo) as written in the header; ``None`` until it is written."""
        self.skipped = 0
        """Frames left out because FLV cannot carry them."""
        self.frames = 0
        """Frames written (not counting skipped ones)."""

    @property
    def started(self) -> bool:
        """Whether the header has been written."""
        return self._pending is None

    def write(self, frames: Sequence[Frame]) -> bytes:
        """The bytes for ``frames`` (the header first, once it can be written)."""
        return b"".join(self.write_parts(frames))

    def finish(self) -> bytes:
        """The header and held frames if the header was still waiting, else ``b""``."""
        return b"".join(self.finish_parts())

    def write_parts(self, frames: Sequence[Frame]) -> list[bytes]:
        """:meth:`write` as a list of buffers: the header, then each frame's shared tag as it
        is (no copy, for a ``writev``)."""
        pending = self._pending
        if pending is None:
            return self._tags(frames)
        for index, frame in enumerate(frames):
            pending.append(frame)
            kind = frame.kind
            decided = False
            if kind is _VIDEO:
                self._video = True
                decided = not frame.config
            elif kind is _AUDIO:
                self._audio = True
                decided = not frame.config
            elif frame.config:
                audio, video = frame.encoded(_TRACKS_KEY, _frame_tracks)
                self._audio = self._audio or bool(audio)
                self._video = self._video or bool(video)
                decided = audio is not None and video is not None
            if decided or len(pending) >= self.max_pending:
                return self._start() + self._tags(frames[index + 1 :])
        return []

    def finish_parts(self) -> list[bytes]:
        """:meth:`finish` as a list of buffers."""
        if self._pending is None:
            return []
        return self._start()

    def _start(self) -> list[bytes]:
        held = self._pending or []
        self._pending = None
        self.flags = (self._audio, self._video)
        return [file_header(self._audio, self._video), *self._tags(held)]

    def _tags(self, frames: Sequence[Frame]) -> list[bytes]:
        tags, skipped = frame_tags(frames)
        self.skipped += skipped
        self.frames += len(tags)
        return tags


def frame_tags(frames: Sequence[Frame]) -> tuple[list[bytes], int]:
    """The shared tags of ``frames`` (:func:`frame_to_tag`) and how many frames were left out
    because FLV cannot carry them. Never raises."""
    to_tag = frame_to_tag
    try:
        return [to_tag(frame) for frame in frames], 0
    except LocalProtocolError:
        tags: list[bytes] = []
        for frame in frames:
            try:
                tags.append(to_tag(frame))
            except LocalProtocolError:
                pass
        return tags, len(frames) - len(tags)
