"""The server side of an RTMP connection after the handshake: a sans-IO state machine.

:class:`ServerSession` receives the chunk stream bytes (the handshake is
:mod:`.handshake`'s). Feed it what the socket gives with :meth:`~ServerSession.receive_data`,
take events (:mod:`.events`) with :meth:`~ServerSession.next_event` until it returns ``None``,
answer the events that need a decision, and write what :meth:`~ServerSession.data_to_send`
returns. It never touches a socket. What both roles share (acknowledgements, pings, aggregate
and AMF3 unwrapping, timestamps, limits) is :mod:`.endpoint`'s.

States: every state and transition is in :mod:`.server_states` (h11's ``_state.py``), and
the session changes a state only through its tables:

* the connection: :class:`~.server_states.ConnectionState`, moved only through
  :data:`~.server_states.CONNECTION_TRANSITIONS` (:func:`~.server_states.next_connection_state`):
  ``NEW`` -> ``CONNECT_PENDING`` (a ``connect`` arrived) -> ``CONNECTED``
  (:meth:`~ServerSession.accept_connect`) or ``REJECTED`` (:meth:`~ServerSession.reject_connect`);
  a ``connect`` in any other state is a second one (a ``RemoteProtocolError``); commands other
  than ``connect`` need ``CONNECTED``;
* each message stream: :class:`~.server_states.StreamState`, moved only through
  :data:`~.server_states.STREAM_TRANSITIONS` (:func:`~.server_states.next_stream_state`):
  ``IDLE`` -> ``PUBLISH_PENDING`` / ``PLAY_PENDING`` (a ``publish``/``play``) ->
  ``PUBLISHING`` / ``PLAYING`` (accepted) or back to ``IDLE`` (refused); ``closeStream`` and
  ``deleteStream`` bring it back to ``IDLE`` (and delete it).

What the session answers by itself: ``releaseStream``, ``FCPublish`` (``onFCPublish``
NetStream.Publish.Start, as common servers do), ``FCUnpublish``, ``FCSubscribe``,
``getStreamLength`` and ``createStream``, and ``_error`` for unknown commands that carry a
transaction id.

What needs a decision: a :class:`~.events.ConnectRequest` (answer
:meth:`~ServerSession.accept_connect` or :meth:`~ServerSession.reject_connect`), a
:class:`~.events.PublishRequest` (:meth:`~ServerSession.accept_publish` /
:meth:`~ServerSession.reject_publish`) and a :class:`~.events.PlayRequest`
(:meth:`~ServerSession.accept_play` / :meth:`~ServerSession.reject_play`). While one is
unanswered the session is *paused*: :meth:`~ServerSession.next_event` returns ``None`` and
parses nothing more, so that no reply to a later command can overtake the answer, and no media
arrives for a stream that is not accepted yet. Bytes received meanwhile are buffered up to
``max_paused_input`` (a peer that sends more is misbehaving).

Limits before publishing: until one of its streams is accepted for publishing, a connection
may hold only ``max_setup_buffer`` bytes of partial messages (a few hundred KiB), and no
message, media included, may be larger than that (or than ``max_other_size``): a client that
has not been allowed to publish cannot make the server hold megabytes. The media limits
(``max_video_size``, ``max_audio_size``, ``max_publish_buffer``) apply while it publishes.

Chunk size and the outgoing chunk stream: see :mod:`.endpoint`. After
:meth:`~ServerSession.accept_connect` the outgoing chunk size changes with the Set Chunk Size
it queues, so pre-chunk media with :attr:`~ServerSession.out_chunk_size` read *after* that call
and write ``data_to_send()`` first.

Error policy: any protocol violation by the peer raises
:class:`~arcly_trio.core.errors.RemoteProtocolError` (or a subclass) from
:meth:`~ServerSession.receive_data` or :meth:`~ServerSession.next_event`: malformed chunks or
AMF0, a command before ``connect`` or a second ``connect``, ``publish``/``play`` on stream 0,
too many streams, oversized messages. After that the session is dead: every further call
except :meth:`~ServerSession.data_to_send` and :meth:`~ServerSession.close` raises
:class:`~arcly_trio.core.errors.LocalProtocolError`. Calling a method at the wrong time
(``accept_publish`` without a pending publish...) raises ``LocalProtocolError`` too.
"""

from __future__ import annotations

from typing import Any, Final

from arcly_trio.core.budget import ByteBudget
from arcly_trio.core.errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError
from arcly_trio.media import amf0
from arcly_trio.protocols.rtmp.endpoint import (
    CSID_COMMAND,
    CSID_CONTROL,
    MASK32,
    RtmpEndpoint,
    amf_number,
    split_query,
    stream_id_arg,
)
from arcly_trio.protocols.rtmp.events import (
    BufferLengthChanged,
    ConnectRequest,
    MediaMessage,
    PauseRequest,
    PingResponseReceived,
    PlayRequest,
    PublishRequest,
    StreamCloseRequested,
    StreamCreated,
    StreamDeleted,
    StreamUnpublishRequested,
    UnknownCommand,
)
from arcly_trio.protocols.rtmp.messages import (
    MessageType,
    PeerBandwidthLimit,
    UserControlEvent,
    encode_set_peer_bandwidth,
    encode_window_ack_size,
)
from arcly_trio.protocols.rtmp.server_states import (
    ConnectionState,
    ConnectionTrigger,
    Decision,
    StreamState,
    StreamTrigger,
    next_connection_state,
    next_stream_state,
)

__all__ = ["ServerSession"]

_WINDOW: Final = int(MessageType.WINDOW_ACK_SIZE)
_PEER_BW: Final = int(MessageType.SET_PEER_BANDWIDTH)
_AMF0_DATA: Final = int(MessageType.AMF0_DATA)


class _Stream:
    __slots__ = ("state", "name", "reset")

    def __init__(self) -> None:
        self.state = StreamState.IDLE
        self.name = ""
        self.reset = True


class ServerSession(RtmpEndpoint):
    """The server side of one RTMP connection after the handshake (sans-IO).

    See the module docstring for what it answers by itself, what needs a decision, which chunk
    streams it uses, how timestamps are unwrapped and what it raises.

    Arguments (all keyword):

    * ``chunk_size``: the outgoing chunk size announced on ``accept_connect()`` (>= 4096);
    * ``window_ack_size`` and ``peer_bandwidth``: what ``accept_connect()`` announces
      (Window Acknowledgement Size, and Set Peer Bandwidth with limit type dynamic);
    * ``max_streams``: message streams a connection may hold at once (``createStream``);
    * ``max_paused_input``: bytes that may pile up unparsed while a decision is pending;
    * ``max_setup_buffer``: bytes of partial messages a connection may hold while none of its
      streams publishes (connect, createStream, play... are small commands), and the message
      size limit then for every kind, media included;
    * ``max_publish_buffer``: bytes of partial messages a publishing connection may hold
      (default: twice ``max_video_size``);
    * ``budget``: a :class:`~arcly_trio.core.budget.ByteBudget` shared by every connection of
      the worker, charged with the partial-message bytes really held;
    * ``min_chunk_size``: the smallest Set Chunk Size accepted from the peer (128, as SRS);
    * ``initial_bytes_received``: bytes to count as received before the first
      ``receive_data`` (e.g. the handshake's, if the acknowledgements should include them);
    * ``fms_version`` and ``capabilities``: the server identity ``_result`` of ``connect``
      reports;
    * the :class:`~.chunks.ChunkReader` limits ``max_chunk_size``, ``max_video_size``,
      ``max_audio_size``, ``max_other_size`` and ``max_partial_messages`` (the media sizes
      apply once a stream publishes).
    """

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        window_ack_size: int = 2_500_000,
        peer_bandwidth: int = 2_500_000,
        max_streams: int = 16,
        max_paused_input: int = 256 * 1024,
        max_setup_buffer: int = 256 * 1024,
        max_publish_buffer: int | None = None,
        budget: ByteBudget | None = None,
        min_chunk_size: int = 128,
        initial_bytes_received: int = 0,
        fms_version: str = "FMS/3,0,1,123",
        capabilities: float = 31.0,
        max_chunk_size: int = 65536,
        max_video_size: int = 8 * 1024 * 1024,
        max_audio_size: int = 1024 * 1024,
        max_other_size: int = 64 * 1024,
        max_partial_messages: int = 64,
    ) -> None:
        super().__init__(
            max_chunk_size=max_chunk_size,
            max_video_size=max_video_size,
            max_audio_size=max_audio_size,
            max_other_size=max_other_size,
            max_partial_messages=max_partial_messages,
            initial_bytes_received=initial_bytes_received,
            min_chunk_size=min_chunk_size,
            budget=budget,
        )
        self._media_limits = (max_video_size, max_audio_size, max_publish_buffer or 2 * max_video_size)
        self.max_setup_buffer = max_setup_buffer
        self._publishing = 0
        self._apply_limits()
        if not 4096 <= chunk_size <= 0x7FFFFFFF:
            raise LocalProtocolError(f"chunk_size must be at least 4096, not {chunk_size}")
        if max_streams < 1:
            raise LocalProtocolError("max_streams must be positive")
        self._chunk_size_to_announce = chunk_size
        self._window_ack_size = window_ack_size
        self._peer_bandwidth_to_announce = peer_bandwidth
        self.max_streams = max_streams
        self.max_paused_input = max_paused_input
        self._fms_version = fms_version
        self._capabilities = capabilities
        self._state = ConnectionState.NEW
        self._connect_tid = 0.0
        self._pending: tuple[Decision, int] | None = None
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._app: str | None = None

    # -- properties ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """``accept_connect()`` was called."""
        return self._state is ConnectionState.CONNECTED

    @property
    def app(self) -> str | None:
        """The application the client connected to (once it sent ``connect``)."""
        return self._app

    @property
    def state(self) -> ConnectionState:
        """Where the connection is: new, connect pending, connected or rejected."""
        return self._state

    @property
    def awaiting_decision(self) -> tuple[Decision, int] | None:
        """``(Decision.CONNECT | PUBLISH | PLAY, stream_id)`` while an answer is pending.

        ``Decision`` is a ``str`` enum, so it compares equal to ``"connect"``, ``"publish"``
        and ``"play"``.
        """
        return self._pending

    @property
    def streams(self) -> dict[int, StreamState]:
        """Allocated message stream ids and their states (a ``str`` enum: ``"idle"``...)."""
        return {stream_id: stream.state for stream_id, stream in self._streams.items()}

    @property
    def publishing(self) -> bool:
        """Whether a stream of this connection publishes (media limits apply, not setup ones)."""
        return self._publishing > 0

    def _apply_limits(self) -> None:
        """Media-sized limits while a stream publishes, setup-sized ones otherwise."""
        reader = self._reader
        if self._publishing:
            reader.max_video_size, reader.max_audio_size, reader.max_buffered_bytes = self._media_limits
        else:
            small = min(self.max_setup_buffer, reader.max_other_size)
            reader.max_video_size = reader.max_audio_size = small
            reader.max_buffered_bytes = self.max_setup_buffer

    def _advance(self, trigger: ConnectionTrigger) -> None:
        """Move the connection along :data:`CONNECTION_TRANSITIONS`: the one place its state
        changes (:func:`next_connection_state` refuses an illegal move)."""
        self._state = next_connection_state(self._state, trigger)

    def _set_state(self, stream: _Stream, trigger: StreamTrigger) -> None:
        was = stream.state
        stream.state = next_stream_state(was, trigger)
        publishing = (stream.state is StreamState.PUBLISHING) - (was is StreamState.PUBLISHING)
        if publishing:
            self._publishing += publishing
            self._apply_limits()

    # -- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed received bytes; raises ``MessageTooLarge`` if too much piles up while paused."""
        super().receive_data(data)
        if self._pending is not None and self._reader.unparsed_bytes > self.max_paused_input:
            self._broken = True
            raise MessageTooLarge(
                "input while a decision is pending",
                self._reader.unparsed_bytes,
                self.max_paused_input,
            )

    def _paused(self) -> bool:
        return self._pending is not None

    def _wants_media(self, stream_id: int) -> bool:
        stream = self._streams.get(stream_id)
        return stream is not None and stream.state is StreamState.PUBLISHING

    def _on_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is not StreamState.PUBLISHING:
            self.dropped_messages += 1
            return
        self._events.append(MediaMessage(stream_id, type_id, self._clock(stream_id, timestamp), payload))

    def _on_data(self, stream_id: int, timestamp: int, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is not StreamState.PUBLISHING:
            self.dropped_messages += 1
            return
        self._events.append(self._data_event(stream_id, timestamp, payload))

    def _on_user_control(self, event_type: int, data: int, buffer_length: int) -> None:
        if event_type == UserControlEvent.PING_RESPONSE:
            self._events.append(PingResponseReceived(data))
        elif event_type == UserControlEvent.SET_BUFFER_LENGTH:
            self._events.append(BufferLengthChanged(data, buffer_length))

    def _on_command(self, stream_id: int, payload: bytes) -> None:
        name, tid, command_object, args = self._decode_command(payload)
        if name == "connect":
            self._on_connect(tid, command_object, args)  # the transition table refuses a second one
            return
        if self._state is not ConnectionState.CONNECTED:
            raise RemoteProtocolError(f"command {name!r} before a successful connect")
        handler = _HANDLERS.get(name)
        if handler is None:
            self._unknown(stream_id, name, tid, command_object, args)
        else:
            handler(self, stream_id, tid, args)

    def _on_connect(self, tid: float, command_object: Any, args: tuple[Any, ...]) -> None:
        self._advance(ConnectionTrigger.CONNECT)
        if not isinstance(command_object, dict):
            raise RemoteProtocolError("connect without a command object")
        app = command_object.get("app", "")
        if not isinstance(app, str):
            raise RemoteProtocolError("connect with a non-string app")
        tc_url = command_object.get("tcUrl", "")
        if not isinstance(tc_url, str):
            tc_url = ""
        app_path, app_query = split_query(app)
        _, tc_query = split_query(tc_url)
        app_path = app_path.rstrip("/")
        self._app = app_path
        self._connect_tid = tid
        self._pending = (Decision.CONNECT, 0)
        self._events.append(ConnectRequest(tid, app_path, tc_url, {**tc_query, **app_query}, command_object, args))

    def _unknown(self, stream_id: int, name: str, tid: float, command_object: Any, args: tuple[Any, ...]) -> None:
        if tid and not name.startswith(("_", "on")):
            self._send_command(
                stream_id,
                "_error",
                tid,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Call.Failed",
                    "description": f"Method not found ({name}).",
                },
            )
        self._events.append(UnknownCommand(stream_id, name, tid, command_object, args))

    def _release_stream(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        if tid:
            self._send_command(stream_id, "_result", tid, None, amf0.UNDEFINED)

    def _fc_publish(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        name = args[0] if args and isinstance(args[0], str) else ""
        self._send_command(
            stream_id,
            "onFCPublish",
            0,
            None,
            {"code": "NetStream.Publish.Start", "description": name},
        )
        if tid:
            self._send_command(stream_id, "_result", tid, None, amf0.UNDEFINED)

    def _fc_unpublish(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        name = args[0] if args and isinstance(args[0], str) else ""
        self._send_command(
            stream_id,
            "onFCUnpublish",
            0,
            None,
            {"code": "NetStream.Unpublish.Success", "description": name},
        )
        if tid:
            self._send_command(stream_id, "_result", tid, None, amf0.UNDEFINED)
        self._events.append(StreamUnpublishRequested(split_query(name)[0], tid))

    def _fc_subscribe(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        if tid:
            self._send_command(stream_id, "_result", tid, None, amf0.UNDEFINED)

    def _get_stream_length(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        if tid:
            self._send_command(stream_id, "_result", tid, None, 0.0)

    def _allocate(self, stream_id: int) -> _Stream:
        if len(self._streams) >= self.max_streams:
            raise RemoteProtocolError(f"more than {self.max_streams} streams on one connection")
        stream = self._streams[stream_id] = _Stream()
        return stream

    def _create_stream(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        while self._next_stream_id in self._streams:
            self._next_stream_id += 1
        new_id = self._next_stream_id
        if new_id > MASK32:
            raise RemoteProtocolError("message stream ids exhausted")
        self._allocate(new_id)
        self._next_stream_id += 1
        self._send_command(stream_id, "_result", tid, None, float(new_id))
        self._events.append(StreamCreated(new_id, tid))

    def _stream_for(self, stream_id: int, command: str) -> _Stream:
        if stream_id == 0:
            raise RemoteProtocolError(f"{command} on message stream 0")
        stream = self._streams.get(stream_id)
        if stream is None:
            # Lenient: a client that skipped createStream gets the stream it names.
            stream = self._allocate(stream_id)
        return stream

    def _publish(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        stream = self._stream_for(stream_id, "publish")
        if not args or not isinstance(args[0], str):
            raise RemoteProtocolError("publish without a stream name")
        name, query = split_query(args[0])
        publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        if stream.state is not StreamState.IDLE:
            self._status(stream_id, "error", "NetStream.Publish.BadName", "Stream is busy.")
            return
        self._set_state(stream, StreamTrigger.PUBLISH)
        stream.name = name
        self._pending = (Decision.PUBLISH, stream_id)
        self._events.append(PublishRequest(stream_id, name, query, publish_type, tid))

    def _play(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        stream = self._stream_for(stream_id, "play")
        if not args or not isinstance(args[0], str):
            raise RemoteProtocolError("play without a stream name")
        name, query = split_query(args[0])
        start = amf_number(args[1] if len(args) > 1 else None, -2.0)
        duration = amf_number(args[2] if len(args) > 2 else None, -1.0)
        reset = True
        if len(args) > 3 and isinstance(args[3], (bool, int, float)):
            reset = bool(args[3])
        if stream.state is not StreamState.IDLE:
            self._status(stream_id, "error", "NetStream.Play.Failed", "Stream is busy.")
            return
        self._set_state(stream, StreamTrigger.PLAY)
        stream.name = name
        stream.reset = reset
        self._pending = (Decision.PLAY, stream_id)
        self._events.append(PlayRequest(stream_id, name, query, start, duration, reset, tid))

    def _pause(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        if stream_id not in self._streams:
            return
        paused = bool(args[0]) if args and isinstance(args[0], (bool, int, float)) else True
        position = amf_number(args[1] if len(args) > 1 else None, 0.0)
        self._events.append(PauseRequest(stream_id, paused, position))

    def _delete_stream(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        target = stream_id_arg(args[0]) if args else None
        if target is None or target not in self._streams:
            return
        self._set_state(self._streams[target], StreamTrigger.CLOSE)
        del self._streams[target]
        self._clocks.pop(target, None)
        self._events.append(StreamDeleted(target))

    def _close_stream(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        self._set_state(stream, StreamTrigger.CLOSE)
        self._clocks.pop(stream_id, None)
        self._events.append(StreamCloseRequested(stream_id))

    # -- answers ------------------------------------------------------------------------------

    def _status(self, stream_id: int, level: str, code: str, description: str, **extra: Any) -> None:
        info: dict[str, Any] = {"level": level, "code": code, "description": description}
        info.update(extra)
        self._send_command(stream_id, "onStatus", 0, None, info)

    def _take_pending(self, kind: Decision, stream_id: int = 0) -> None:
        self._check_alive()
        if self._pending != (kind, stream_id):
            raise LocalProtocolError(f"no {kind} request pending on stream {stream_id} (pending: {self._pending})")
        self._pending = None

    def accept_connect(
        self,
        *,
        properties: dict[str, Any] | None = None,
        information: dict[str, Any] | None = None,
    ) -> None:
        """Accept the pending ``connect``.

        Queues Window Acknowledgement Size, Set Peer Bandwidth (dynamic), Set Chunk Size (the
        ``chunk_size`` argument, from now on :attr:`out_chunk_size`) and ``_result`` with
        ``{fmsVer, capabilities, mode}`` and ``{level: status, code:
        NetConnection.Connect.Success, description, objectEncoding: 0}``; ``properties`` and
        ``information`` add fields to those two objects.
        """
        self._take_pending(Decision.CONNECT)
        self._advance(ConnectionTrigger.ACCEPT)
        self._send_control(_WINDOW, encode_window_ack_size(self._window_ack_size))
        self._send_control(
            _PEER_BW,
            encode_set_peer_bandwidth(self._peer_bandwidth_to_announce, PeerBandwidthLimit.DYNAMIC),
        )
        self._out += self._writer.set_chunk_size(self._chunk_size_to_announce, csid=CSID_CONTROL)
        props: dict[str, Any] = {
            "fmsVer": self._fms_version,
            "capabilities": self._capabilities,
            "mode": 1.0,
        }
        props.update(properties or {})
        info: dict[str, Any] = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": 0.0,
        }
        info.update(information or {})
        self._send_command(0, "_result", self._connect_tid, props, info)

    def reject_connect(
        self,
        description: str = "Connection rejected.",
        *,
        code: str = "NetConnection.Connect.Rejected",
    ) -> None:
        """Reject the pending ``connect`` with ``_error`` (level error, ``code``).

        The connection should then be closed once :meth:`data_to_send` is written; any further
        command from the peer is a ``RemoteProtocolError``.
        """
        self._take_pending(Decision.CONNECT)
        self._advance(ConnectionTrigger.REJECT)
        self._send_command(
            0,
            "_error",
            self._connect_tid,
            None,
            {"level": "error", "code": code, "description": description},
        )

    def accept_publish(self, stream_id: int) -> None:
        """Accept the pending ``publish``: Stream Begin, onStatus NetStream.Publish.Start."""
        self._take_pending(Decision.PUBLISH, stream_id)
        stream = self._streams[stream_id]
        self._set_state(stream, StreamTrigger.ACCEPT)
        self._send_user_control(UserControlEvent.STREAM_BEGIN, stream_id)
        self._status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            f"{stream.name} is now published.",
            details=stream.name,
        )

    def reject_publish(
        self,
        stream_id: int,
        code: str = "NetStream.Publish.BadName",
        description: str = "Publishing refused.",
    ) -> None:
        """Refuse the pending ``publish`` with an onStatus of level error.

        Codes real servers use: ``NetStream.Publish.BadName`` (name in use or invalid, the
        default), ``NetStream.Publish.Denied`` (not authorised), ``NetStream.Publish.Rejected``.
        The stream goes back to idle.
        """
        self._take_pending(Decision.PUBLISH, stream_id)
        self._set_state(self._streams[stream_id], StreamTrigger.REJECT)
        self._status(stream_id, "error", code, description)

    def accept_play(self, stream_id: int) -> None:
        """Accept the pending ``play``.

        Queues Stream Begin, onStatus NetStream.Play.Reset (if the request's ``reset``),
        onStatus NetStream.Play.Start and the ``|RtmpSampleAccess`` data message.
        """
        self._take_pending(Decision.PLAY, stream_id)
        stream = self._streams[stream_id]
        self._set_state(stream, StreamTrigger.ACCEPT)
        self._send_user_control(UserControlEvent.STREAM_BEGIN, stream_id)
        if stream.reset:
            self._status(
                stream_id,
                "status",
                "NetStream.Play.Reset",
                f"Playing and resetting {stream.name}.",
                details=stream.name,
            )
        self._status(
            stream_id,
            "status",
            "NetStream.Play.Start",
            f"Started playing {stream.name}.",
            details=stream.name,
        )
        self._send(CSID_COMMAND, _AMF0_DATA, stream_id, 0, amf0.encode("|RtmpSampleAccess", True, True))

    def reject_play(
        self,
        stream_id: int,
        code: str = "NetStream.Play.StreamNotFound",
        description: str | None = None,
    ) -> None:
        """Refuse the pending ``play`` with an onStatus of level error; the stream goes idle.

        Codes: ``NetStream.Play.StreamNotFound`` (the default), ``NetStream.Play.Failed``.
        """
        self._take_pending(Decision.PLAY, stream_id)
        stream = self._streams[stream_id]
        self._set_state(stream, StreamTrigger.REJECT)
        if description is None:
            description = f"No such stream: {stream.name}."
        self._status(stream_id, "error", code, description)

    def accept_pause(self, stream_id: int, paused: bool) -> None:
        """Answer a :class:`PauseRequest` as nginx-rtmp does.

        Pausing: Stream EOF and onStatus NetStream.Pause.Notify; resuming: Stream Begin and
        onStatus NetStream.Unpause.Notify.
        """
        self._check_alive()
        if paused:
            self._send_user_control(UserControlEvent.STREAM_EOF, stream_id)
            self._status(stream_id, "status", "NetStream.Pause.Notify", "Paused live.")
        else:
            self._send_user_control(UserControlEvent.STREAM_BEGIN, stream_id)
            self._status(stream_id, "status", "NetStream.Unpause.Notify", "Unpaused live.")

    def send_stream_begin(self, stream_id: int) -> None:
        """Queue a user control Stream Begin."""
        self._check_alive()
        self._send_user_control(UserControlEvent.STREAM_BEGIN, stream_id)

    def send_stream_eof(self, stream_id: int) -> None:
        """Queue a user control Stream EOF (playback of ``stream_id`` is over)."""
        self._check_alive()
        self._send_user_control(UserControlEvent.STREAM_EOF, stream_id)

    def send_on_status(self, stream_id: int, level: str, code: str, description: str, **extra: Any) -> None:
        """Queue ``onStatus(0, null, {level, code, description, **extra})`` on ``stream_id``."""
        self._check_alive()
        self._status(stream_id, level, code, description, **extra)

    def send_unpublish_notify(self, stream_id: int, description: str = "Stream unpublished.") -> None:
        """Tell a player its stream ended: onStatus NetStream.Play.UnpublishNotify, Stream EOF.

        FFmpeg ends its input on that status.
        """
        self._check_alive()
        self._status(stream_id, "status", "NetStream.Play.UnpublishNotify", description)
        self._send_user_control(UserControlEvent.STREAM_EOF, stream_id)


_HANDLERS: Final[dict[str, Any]] = {
    "releaseStream": ServerSession._release_stream,
    "FCPublish": ServerSession._fc_publish,
    "FCUnpublish": ServerSession._fc_unpublish,
    "FCSubscribe": ServerSession._fc_subscribe,
    "getStreamLength": ServerSession._get_stream_length,
    "createStream": ServerSession._create_stream,
    "publish": ServerSession._publish,
    "play": ServerSession._play,
    "pause": ServerSession._pause,
    "deleteStream": ServerSession._delete_stream,
    "closeStream": ServerSession._close_stream,
}
