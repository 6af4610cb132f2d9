"""The client side of an RTMP connection after the handshake (sans-IO).

:class:`ClientSession` queues commands (``connect``, ``createStream``, ``publish``, ``play``...)
and media, and turns what the server sends into events (:mod:`.events`). Acknowledgements and
ping responses are handled by the shared machinery (:mod:`.endpoint`). Tests drive servers
with it; the whole client conversation (:class:`~.client.RtmpClient`) builds on it.

Error policy: as :mod:`.endpoint`: the server's protocol violations raise
``RemoteProtocolError`` (or a subclass) and the session is dead afterwards.
"""

from __future__ import annotations

from typing import Any, Final

from arcly_trio.media import amf0
from arcly_trio.protocols.rtmp.endpoint import CSID_AUDIO, CSID_DATA, CSID_VIDEO, RtmpEndpoint
from arcly_trio.protocols.rtmp.events import CommandReceived, ControlReceived, MediaMessage, UserControlReceived
from arcly_trio.protocols.rtmp.messages import MessageType, UserControlEvent

__all__ = ["ClientSession"]

_AUDIO: Final = int(MessageType.AUDIO)
_AMF0_DATA: Final = int(MessageType.AMF0_DATA)


class ClientSession(RtmpEndpoint):
    """The client side of an RTMP connection after the handshake (sans-IO).

    Each command method queues the command and returns its transaction id. Everything the
    server sends surfaces as an event: :class:`CommandReceived`, :class:`UserControlReceived`,
    :class:`ControlReceived` (Set Chunk Size, Window Acknowledgement Size, Set Peer Bandwidth,
    Acknowledgement), :class:`MediaMessage` and :class:`DataMessage` (on any stream).
    Ping Requests are answered and Acknowledgements sent by the common machinery. Errors as in
    :class:`ServerSession`.
    """

    def __init__(
        self,
        *,
        max_chunk_size: int = 65536,
        max_video_size: int = 8 * 1024 * 1024,
        max_audio_size: int = 1024 * 1024,
        max_other_size: int = 64 * 1024,
        max_partial_messages: int = 64,
        max_buffered_bytes: int | None = None,
    ) -> None:
        super().__init__(
            max_chunk_size=max_chunk_size,
            max_video_size=max_video_size,
            max_audio_size=max_audio_size,
            max_other_size=max_other_size,
            max_partial_messages=max_partial_messages,
            initial_bytes_received=0,
            max_buffered_bytes=max_buffered_bytes,
        )
        self._transactions = 0

    def _on_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        self._events.append(MediaMessage(stream_id, type_id, self._clock(stream_id, timestamp), payload))

    def _on_data(self, stream_id: int, timestamp: int, payload: bytes) -> None:
        self._events.append(self._data_event(stream_id, timestamp, payload))

    def _on_command(self, stream_id: int, payload: bytes) -> None:
        name, tid, command_object, args = self._decode_command(payload)
        self._events.append(CommandReceived(stream_id, name, tid, command_object, args))

    def _on_user_control(self, event_type: int, data: int, buffer_length: int) -> None:
        self._events.append(UserControlReceived(event_type, data, buffer_length))

    def _on_control(self, type_id: int, values: tuple[int, ...]) -> None:
        self._events.append(ControlReceived(type_id, values))

    def call(
        self,
        name: str,
        *args: Any,
        stream_id: int = 0,
        command_object: Any = None,
        transaction_id: float | None = None,
    ) -> float:
        """Queue any command; a new transaction id is used unless one is given."""
        self._check_alive()
        if transaction_id is None:
            self._transactions += 1
            transaction_id = float(self._transactions)
        self._send_command(stream_id, name, transaction_id, command_object, *args)
        return transaction_id

    def connect(self, app: str, tc_url: str | None = None, *, extra: dict[str, Any] | None = None) -> float:
        """Queue ``connect`` (FFmpeg-like command object plus ``extra``)."""
        command_object: dict[str, Any] = {
            "app": app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; arcly-trio)",
            "tcUrl": tc_url if tc_url is not None else f"rtmp://localhost/{app}",
        }
        command_object.update(extra or {})
        return self.call("connect", command_object=command_object)

    def release_stream(self, name: str) -> float:
        return self.call("releaseStream", name)

    def fc_publish(self, name: str) -> float:
        return self.call("FCPublish", name)

    def fc_unpublish(self, name: str) -> float:
        return self.call("FCUnpublish", name)

    def create_stream(self) -> float:
        return self.call("createStream")

    def publish(self, stream_id: int, name: str, publish_type: str = "live") -> None:
        self.call("publish", name, publish_type, stream_id=stream_id, transaction_id=0.0)

    def play(
        self,
        stream_id: int,
        name: str,
        start: float = -2.0,
        duration: float = -1.0,
        reset: bool = True,
    ) -> None:
        self.call("play", name, start, duration, reset, stream_id=stream_id, transaction_id=0.0)

    def pause(self, stream_id: int, paused: bool, position: float = 0.0) -> None:
        self.call("pause", paused, position, stream_id=stream_id, transaction_id=0.0)

    def close_stream(self, stream_id: int) -> None:
        self.call("closeStream", stream_id=stream_id, transaction_id=0.0)

    def delete_stream(self, stream_id: int) -> None:
        self.call("deleteStream", float(stream_id), transaction_id=0.0)

    def send_media(
        self,
        stream_id: int,
        type_id: int,
        timestamp: int,
        payload: bytes,
        *,
        csid: int | None = None,
    ) -> None:
        """Queue an audio (8) or video (9) message on its reserved chunk stream."""
        if csid is None:
            csid = CSID_AUDIO if type_id == _AUDIO else CSID_VIDEO
        self.send_message(csid, type_id, stream_id, timestamp, payload)

    def send_data(self, stream_id: int, timestamp: int, *values: Any) -> None:
        """Queue an AMF0 data message (e.g. ``"@setDataFrame", "onMetaData", {...}``)."""
        self.send_message(CSID_DATA, _AMF0_DATA, stream_id, timestamp, amf0.encode(*values))

    def send_set_buffer_length(self, stream_id: int, buffer_length: int) -> None:
        """Queue a user control Set Buffer Length (as FFmpeg does after ``play``)."""
        self._check_alive()
        self._send_user_control(UserControlEvent.SET_BUFFER_LENGTH, stream_id, buffer_length)
