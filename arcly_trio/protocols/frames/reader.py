"""Reading one peer's ``arcly.frames.v1`` message sequence: validation, then kernel frames (sans-IO).

:class:`FramesReader` takes the messages of one WebSocket, in order, and gives back kernel
:class:`~arcly_trio.core.frame.Frame` objects and the text messages, after checking every
rule of the protocol (see :mod:`.messages` and ``docs/frames-protocol.md``):

* each message is well formed and within the :class:`~.messages.Limits`;
* a track's ``config`` comes before its first frame; a config that announces a record is
  followed at once by that record (a binary message with the config flag, of exactly that
  size, for the same kind and track); a record never comes unannounced;
* the record parses (:func:`arcly_trio.media.codec_strings.decoder_parameters`), so nothing
  the kernel or an egress cannot read gets in; for VP9, AV1 and Opus a publisher may send no
  record and one is derived from the codec string (:func:`~arcly_trio.media.codec_strings.config_record_for`);
* the first video frame after a config is a keyframe;
* decoding timestamps never go back on a track, and ``pts - dts`` fits FLV's composition
  time (so every frame can be played over RTMP and HTTP-FLV);
* nothing follows ``end``; a publisher sends only ``config``, frames and ``end``.

The server reads publishers with ``FramesReader(peer="publisher")``; a client reads a server
with ``FramesReader(peer="server")`` (which also accepts ``start`` and ``stats``).

Error policy: every broken rule raises :class:`~.messages.FramesProtocolError` with the close
code for it; nothing else escapes whatever the input. After an error the reader is unusable
(the connection is closed).
"""

from __future__ import annotations

from typing import Final, Literal

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import codec_strings
from arcly_trio.media.codecs import CodecError
from arcly_trio.protocols.frames.messages import (
    HEADER_SIZE,
    CloseCode,
    Config,
    End,
    FrameMessage,
    FramesProtocolError,
    Limits,
    Start,
    Stats,
    TextMessage,
    decode_frame,
    decode_frame_header,
    decode_text,
)

__all__ = ["Event", "FramesReader"]

Event = Frame | Start | Config | Stats | End
"""What the reader gives back: frames (config frames included) and text messages."""

_CTS_LIMIT_US: Final = 0x7FFFFF * 1000  # FLV's signed 24-bit composition time, in microseconds
_Track = tuple[FrameKind, int]


class FramesReader:
    """Validates one peer's messages and turns them into events (see the module docstring).

    Attributes:
        configs: the current config of each (kind, track).
        ended: the peer's ``end`` message once received.
        frames: media frames accepted.
        bytes: payload bytes of the media frames accepted.
    """

    def __init__(self, peer: Literal["publisher", "server"] = "publisher", limits: Limits = Limits()) -> None:
        if peer not in ("publisher", "server"):
            raise ValueError(f"peer must be 'publisher' or 'server', not {peer!r}")
        self.peer = peer
        self.limits = limits
        self.configs: dict[_Track, Config] = {}
        self.ended: End | None = None
        self.frames = 0
        self.bytes = 0
        self._pending: Config | None = None
        self._last_dts: dict[_Track, int] = {}
        self._needs_key: set[_Track] = set()

    def _check_open(self, what: str) -> None:
        if self.ended is not None:
            raise FramesProtocolError(f"{what} after 'end'", CloseCode.ORDER)

    def _no_pending(self, got: str) -> None:
        pending = self._pending
        if pending is not None:
            raise FramesProtocolError(
                f"the config of {pending.kind.value} track {pending.track} announced a "
                f"{pending.record}-byte record, but {got} came instead",
                CloseCode.ORDER,
            )

    def receive_text(self, text: str | bytes) -> list[Event]:
        """The events of one text message (a ``config`` without a record gives its config
        frame at once when one can be derived)."""
        self._check_open("a message")
        message: TextMessage = decode_text(text, self.limits)
        self._no_pending(f"a {type(message).__name__.lower()} message")
        if isinstance(message, Config):
            return self._config(message)
        if isinstance(message, End):
            self.ended = message
            return [message]
        if self.peer == "publisher":
            raise FramesProtocolError(f"a publisher may not send {type(message).__name__.lower()} messages")
        return [message]

    def _config(self, config: Config) -> list[Event]:
        track = (config.kind, config.track)
        if config.record:
            self._pending = config
            return [config]
        if self.peer == "server":
            self._accept_config(config)
            return [config]
        try:
            record = codec_strings.config_record_for(
                config.codec, channels=config.channels, sample_rate=config.sample_rate
            )
        except CodecError as exc:
            raise FramesProtocolError(str(exc), CloseCode.UNSUPPORTED) from None
        self._accept_config(config)
        dts = self._last_dts.get(track, 0) // 1000
        return [config, Frame(config.kind, config.format, dts, dts, record, False, True, config.track)]

    def _accept_config(self, config: Config) -> None:
        track = (config.kind, config.track)
        self.configs[track] = config
        if config.kind is FrameKind.VIDEO:
            self._needs_key.add(track)

    def receive_binary(self, data: bytes | bytearray | memoryview) -> Frame:
        """The frame of one binary message."""
        if self.ended is not None:
            self._check_open("a frame")
        kind, track_id, key, is_config, pts_us, dts_us = decode_frame_header(data, self.limits)
        if is_config:
            return self._record(decode_frame(data, self.limits))
        if self._pending is not None:
            self._no_pending(f"a {kind.value} frame")
        track = (kind, track_id)
        config = self.configs.get(track)
        if config is None:
            raise FramesProtocolError(f"{kind.value} frame on track {track_id} before its config", CloseCode.ORDER)
        last = self._last_dts.get(track)
        if last is not None and dts_us < last:
            raise FramesProtocolError(
                f"{kind.value} track {track_id}: decoding timestamp went back from {last} to {dts_us} us",
                CloseCode.ORDER,
            )
        if abs(pts_us - dts_us) > _CTS_LIMIT_US:
            raise FramesProtocolError("pts - dts is over 8388 s", CloseCode.ORDER)
        keyframe = kind is FrameKind.VIDEO and key
        needs_key = self._needs_key
        if needs_key and track in needs_key:
            if not keyframe:
                raise FramesProtocolError(
                    f"the first video frame of track {track_id} after its config is not a keyframe",
                    CloseCode.ORDER,
                )
            needs_key.discard(track)
        self._last_dts[track] = dts_us
        # one copy of the payload (the message itself when it is bytes: a slice of it)
        payload = data[HEADER_SIZE:] if type(data) is bytes else bytes(memoryview(data)[HEADER_SIZE:])
        self.frames += 1
        self.bytes += len(payload)
        return Frame(kind, config.format, pts_us // 1000, dts_us // 1000, payload, keyframe, False, track_id)

    def _record(self, message: FrameMessage) -> Frame:
        pending = self._pending
        if pending is None:
            raise FramesProtocolError("a config record without a config message before it", CloseCode.ORDER)
        if (message.kind, message.track) != (pending.kind, pending.track):
            raise FramesProtocolError(
                f"the record of {pending.kind.value} track {pending.track} came as "
                f"{message.kind.value} track {message.track}",
                CloseCode.ORDER,
            )
        size = len(message.payload)
        if size != pending.record:
            raise FramesProtocolError(f"config record of {size} bytes, {pending.record} were announced")
        record = bytes(message.payload)
        try:
            codec_strings.decoder_parameters(pending.format, record)
        except CodecError as exc:
            raise FramesProtocolError(f"bad {pending.format} config record: {exc}", CloseCode.UNSUPPORTED) from None
        self._pending = None
        self._accept_config(pending)
        keyframe = message.key and pending.kind is FrameKind.VIDEO
        return Frame(
            pending.kind,
            pending.format,
            message.pts_us // 1000,
            message.dts_us // 1000,
            record,
            keyframe,
            True,
            pending.track,
        )
