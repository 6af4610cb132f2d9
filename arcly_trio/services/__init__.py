"""Per-stream services the engine runs for every stream: HLS packaging and FLV recording.

Each is a kernel :class:`~arcly_trio.kernel.engine.StreamService` (register it with
``EngineBuilder.service``): :class:`HlsService` packages every stream once into a
:class:`~arcly_trio.storage.Storage` (MPEG-TS HLS, fMP4 HLS, LL-HLS, and DASH from the same
fMP4 segments), :class:`FlvRecorder` records each publish session to a
file. :class:`FlvStreamWriter` turns frames into an FLV byte stream (shared by the recorder and
the HTTP-FLV and WebSocket-FLV egress).
"""

from arcly_trio.media.flv import FlvStreamWriter, metadata_tracks
from arcly_trio.services.hls import HlsService
from arcly_trio.services.recording import (
    FlvRecorder,
    RecordingEvent,
    RecordingFailed,
    RecordingStarted,
    RecordingStopped,
)

__all__ = [
    "HlsService",
    "FlvRecorder",
    "RecordingEvent",
    "RecordingStarted",
    "RecordingStopped",
    "RecordingFailed",
    "FlvStreamWriter",
    "metadata_tracks",
]
