"""Frames as RTMP messages and back: built once per frame and shared, parsed in one place (sans-IO).

Both the server (to its players) and the client (to the server it publishes to) send a frame as
one RTMP message: its FLV tag body (:func:`arcly_trio.media.flv.frame_body`) on the media chunk
stream of its kind, cut into chunks. :func:`frame_chunks` builds those chunks once per outgoing
chunk size and keeps them with the frame (:meth:`~arcly_trio.core.frame.Frame.encoded`), on
message stream :data:`SHARED_STREAM_ID` (what ``createStream`` hands out first, on every common
server). A connection on another message stream id gets the same bytes with its id written
into a 12-byte copy of the first chunk's header (:func:`with_stream_id`), the only place the
id appears, so no value a peer chooses multiplies what a frame holds.

A publisher sends metadata with the ``@setDataFrame`` wrapper (servers keep it as the stream's
metadata); a server sends it bare to players. ``publisher=True`` selects the former.

The other way, :func:`message_frames` turns a received :class:`~.events.MediaMessage` or
:class:`~.events.DataMessage` into the frames it carries, the way h11 hands back events: the
server (a publisher's messages) and the client (a player's) both ingest through it. A message
body becomes each frame's FLV body when it is what FLV would write again (see
:mod:`arcly_trio.media.flv.tags`), so players get the publisher's bytes, rebuilt never.

Error policy: ``LocalProtocolError`` (from the FLV layer) for a frame FLV cannot carry.
:func:`message_frames` raises only ``RemoteProtocolError``, whatever the bytes: its subclass
:class:`~arcly_trio.media.flv.FlvUnsupported` for a well-formed message this library does not
handle (a caller drops that message and goes on), any other for a malformed one (a caller ends
the connection).
"""

from __future__ import annotations

from typing import Final

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import flv
from arcly_trio.protocols.rtmp.chunks import chunk_message
from arcly_trio.protocols.rtmp.endpoint import CSID_AUDIO, CSID_DATA, CSID_VIDEO
from arcly_trio.protocols.rtmp.events import DataMessage, MediaMessage

__all__ = ["SHARED_STREAM_ID", "frame_chunks", "with_stream_id", "message_type", "message_frames"]

#: The message stream id the shared chunks are built with (the first ``createStream`` id).
SHARED_STREAM_ID: Final = 1
_CSID: Final = {FrameKind.AUDIO: CSID_AUDIO, FrameKind.VIDEO: CSID_VIDEO, FrameKind.DATA: CSID_DATA}
_TYPE: Final = {FrameKind.AUDIO: 8, FrameKind.VIDEO: 9, FrameKind.DATA: 18}
# Where the message stream id sits in a chunked message: after a 1-byte basic header (chunk
# streams 4-6) and 7 bytes of timestamp, length and type; 4 bytes, little-endian.
_SID_START: Final = 8
_SID_END: Final = 12


def message_type(frame: Frame) -> int:
    """The RTMP message type of a frame: 8 audio, 9 video, 18 AMF0 data."""
    return _TYPE[frame.kind]


def _build(frame: Frame, chunk_size: int) -> bytes:
    return chunk_message(
        _CSID[frame.kind],
        _TYPE[frame.kind],
        SHARED_STREAM_ID,
        frame.dts & 0xFFFFFFFF,
        flv.frame_body(frame),
        chunk_size,
    )


def _build_published(frame: Frame, chunk_size: int) -> bytes:
    body = flv.data_body(frame, set_data_frame=True)
    return chunk_message(CSID_DATA, 18, SHARED_STREAM_ID, frame.dts & 0xFFFFFFFF, body, chunk_size)


def frame_chunks(frame: Frame, chunk_size: int, *, publisher: bool = False) -> bytes:
    """The chunked RTMP message of ``frame`` on message stream 1, built once per chunk size (and
    role, for metadata) and shared by every connection that sends it."""
    if publisher and frame.kind is FrameKind.DATA and frame.config:
        data: bytes = frame.encoded(("rtmp-publish", chunk_size), _build_published, chunk_size)
    else:
        data = frame.encoded(("rtmp", chunk_size), _build, chunk_size)
    return data


def with_stream_id(data: bytes, stream_id: int) -> list[bytes | memoryview]:
    """``data`` (from :func:`frame_chunks`) as buffers to write for message stream
    ``stream_id``: itself when that is :data:`SHARED_STREAM_ID`, else a patched copy of its
    first 12 bytes and a view of the rest (no copy of the payload)."""
    if stream_id == SHARED_STREAM_ID:
        return [data]
    return [data[:_SID_START] + stream_id.to_bytes(4, "little"), memoryview(data)[_SID_END:]]


def message_frames(message: MediaMessage | DataMessage) -> list[Frame]:
    """The frames a received RTMP message carries, in order: those of an audio or video message
    (several for a multitrack one), the metadata frame of a data message (none for any other data
    message). Raises ``RemoteProtocolError`` only (see the module docstring)."""
    if isinstance(message, DataMessage):
        frame = flv.parse_data(message.timestamp, message.body)
        return [] if frame is None else [frame]
    if message.type_id == 9:
        return flv.parse_video_tracks(message.timestamp, message.payload)
    return flv.parse_audio_tracks(message.timestamp, message.payload)
