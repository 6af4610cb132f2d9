"""The ``arcly.frames.v1`` WebSocket frame protocol (sans-IO): messages and their validation.

:mod:`.messages` encodes and decodes each message (and documents the wire format);
:mod:`.reader` checks one peer's sequence of messages and turns it into kernel frames. The
server routes live in :mod:`arcly_trio.workers.http.frames_routes`, the Python client in
:mod:`arcly_trio.clients.frames`. Nothing here imports trio.
"""

from arcly_trio.protocols.frames.messages import (
    SUBPROTOCOL,
    CloseCode,
    Config,
    End,
    FrameMessage,
    FramesProtocolError,
    Limits,
    Start,
    Stats,
    config_for_frame,
    config_message,
    decode_frame,
    decode_text,
    encode_frame,
    encode_text,
    frame_message,
)
from arcly_trio.protocols.frames.reader import Event, FramesReader

__all__ = [
    "SUBPROTOCOL",
    "CloseCode",
    "Config",
    "End",
    "Event",
    "FrameMessage",
    "FramesProtocolError",
    "FramesReader",
    "Limits",
    "Start",
    "Stats",
    "config_for_frame",
    "config_message",
    "decode_frame",
    "decode_text",
    "encode_frame",
    "encode_text",
    "frame_message",
]
