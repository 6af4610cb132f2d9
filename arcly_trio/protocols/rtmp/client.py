"""The whole client side of an RTMP connection, from the handshake to a clean close (sans-IO).

:class:`RtmpClient` is what a relay or any program needs to publish to or play from an RTMP
server: it runs the handshake (digest, as FFmpeg and OBS send it; simple servers are followed),
then ``connect`` (with ``tcUrl``, and the Enhanced RTMP ``fourCcList`` so servers know we take
HEVC, AV1, VP9 and Opus), its Set Chunk Size (our chunk size, announced before anything that
uses it) and Window Acknowledgement Size, ``createStream``, and ``publish`` (after
``releaseStream`` and ``FCPublish``, as encoders do) or ``play`` (then Set Buffer Length).
Acknowledgements for the server's window and ping responses are sent by the shared machinery
(:mod:`.endpoint`); a Set Peer Bandwidth is answered with a Window Acknowledgement Size of that
size when it differs from ours, as the specification asks. :meth:`RtmpClient.close` says goodbye
(``FCUnpublish`` and ``deleteStream``, or ``deleteStream``).

It never touches a socket: feed bytes with :meth:`~RtmpClient.receive_data`, take events with
:meth:`~RtmpClient.next_event`, write :meth:`~RtmpClient.data_to_send` (then, when publishing,
the buffers of :meth:`~RtmpClient.frame_buffers`). Events: :class:`~.events.Connected`,
:class:`~.events.StreamStarted`, :class:`~.events.Refused`, :class:`~.events.StreamEnded`, and
while playing the :class:`~.events.MediaMessage` and :class:`~.events.DataMessage` of our stream
(and of stream 0, where FFmpeg's own ``-listen`` server sends them; ``|RtmpSampleAccess`` is
dropped).

States, every transition in :data:`CLIENT_TRANSITIONS`: ``HANDSHAKE`` -> ``CONNECTING`` ->
``CREATING`` -> ``STARTING`` -> ``PUBLISHING`` or ``PLAYING``; a refusal at any step, the
server ending the stream, or :meth:`~RtmpClient.close` -> ``CLOSED``.

Limits: the server's messages are held to the session's limits (8 MiB video, 1 MiB audio,
64 KiB other, ``max_buffered_bytes`` of partial messages in all).

Error policy: a server that breaks the protocol raises ``RemoteProtocolError`` (or a subclass,
``HandshakeError`` included) and the client is dead; refusals and ends are events, not
exceptions. Using the client at the wrong time (``frame_buffers`` when not publishing...)
raises ``LocalProtocolError``.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame
from arcly_trio.media import amf0
from arcly_trio.protocols.rtmp.client_session import ClientSession
from arcly_trio.protocols.rtmp.endpoint import stream_id_arg
from arcly_trio.protocols.rtmp.events import (
    CommandReceived,
    Connected,
    ControlReceived,
    DataMessage,
    Event,
    MediaMessage,
    Refused,
    StreamEnded,
    StreamStarted,
    UserControlReceived,
)
from arcly_trio.protocols.rtmp.handshake import ClientHandshake
from arcly_trio.protocols.rtmp.media import frame_chunks, with_stream_id
from arcly_trio.protocols.rtmp.messages import MessageType, UserControlEvent
from arcly_trio.protocols.rtmp.url import RtmpUrl

__all__ = ["RtmpClient", "ClientState", "ClientMode", "CLIENT_TRANSITIONS", "FOURCC_LIST"]

_PEER_BW: Final = int(MessageType.SET_PEER_BANDWIDTH)

#: What ``connect`` announces we take (Enhanced RTMP ``fourCcList``).
FOURCC_LIST: Final = ("avc1", "hvc1", "av01", "vp09", "mp4a", "Opus", ".mp3")
_SAMPLE_ACCESS: Final = amf0.encode("|RtmpSampleAccess")


class ClientMode(str, enum.Enum):
    PUBLISH = "publish"
    PLAY = "play"


class ClientState(str, enum.Enum):
    """Where the client's conversation is."""

    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING = "creating"
    STARTING = "starting"
    PUBLISHING = "publishing"
    PLAYING = "playing"
    CLOSED = "closed"


class _Trigger(enum.Enum):
    HANDSHAKEN = "handshaken"
    CONNECTED = "connected"
    CREATED = "created"
    PUBLISHING = "publishing"
    PLAYING = "playing"
    REFUSED = "refused"
    ENDED = "ended"
    CLOSE = "close"


_S = ClientState
_T = _Trigger

#: Every transition of the conversation: ``(state, trigger) -> next state``.
CLIENT_TRANSITIONS: Final[dict[tuple[ClientState, _Trigger], ClientState]] = {
    (_S.HANDSHAKE, _T.HANDSHAKEN): _S.CONNECTING,
    (_S.CONNECTING, _T.CONNECTED): _S.CREATING,
    (_S.CREATING, _T.CREATED): _S.STARTING,
    (_S.STARTING, _T.PUBLISHING): _S.PUBLISHING,
    (_S.STARTING, _T.PLAYING): _S.PLAYING,
    (_S.CONNECTING, _T.REFUSED): _S.CLOSED,
    (_S.CREATING, _T.REFUSED): _S.CLOSED,
    (_S.STARTING, _T.REFUSED): _S.CLOSED,
    (_S.PUBLISHING, _T.ENDED): _S.CLOSED,
    (_S.PLAYING, _T.ENDED): _S.CLOSED,
    **{(state, _T.CLOSE): _S.CLOSED for state in ClientState},
}

_ENDING_CODES: Final = frozenset(
    {
        "NetStream.Play.UnpublishNotify",
        "NetStream.Play.Stop",
        "NetStream.Play.Complete",
        "NetStream.Unpublish.Success",
    }
)


class RtmpClient:
    """One client connection's conversation (see the module docstring).

    Args:
        url: where to connect and what to publish or play.
        mode: ``"publish"`` or ``"play"``.
        chunk_size: our outgoing chunk size (announced right after the handshake).
        window_ack_size: the Window Acknowledgement Size we announce (how often the server
            acknowledges what we send).
        buffer_length: the Set Buffer Length (ms) sent after ``play``.
        digest: send a digest C1 (as FFmpeg does; servers that answer simply are followed).
        max_buffered_bytes: partial messages from the server held at most.
        random_bytes: the handshake's random source (inject one in tests).
    """

    def __init__(
        self,
        url: RtmpUrl,
        mode: ClientMode | str,
        *,
        chunk_size: int = 4096,
        window_ack_size: int = 2_500_000,
        buffer_length: int = 3000,
        digest: bool = True,
        max_buffered_bytes: int = 16 * 1024 * 1024,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not 128 <= chunk_size <= 0x7FFFFFFF:
            raise LocalProtocolError(f"chunk_size must be 128 or more, not {chunk_size}")
        self.url = url
        self.mode = ClientMode(mode)
        self._chunk_size = chunk_size
        self._window = window_ack_size
        self._buffer_length = buffer_length
        self._handshake = ClientHandshake(digest=digest, random_bytes=random_bytes)
        self.session = ClientSession(max_buffered_bytes=max_buffered_bytes)
        """The raw session (acknowledgement counters, limits)."""
        self._state = ClientState.HANDSHAKE
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._pending: dict[float, str] = {}
        self.stream_id: int | None = None
        """The message stream ``createStream`` gave us."""
        self.server_info: dict[str, Any] = {}
        """The ``connect`` result's information object."""

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def digest(self) -> bool:
        """Whether the server answered our digest handshake with a valid digest."""
        return self._handshake.digest

    def _move(self, trigger: _Trigger) -> None:
        try:
            self._state = CLIENT_TRANSITIONS[self._state, trigger]
        except KeyError:
            raise LocalProtocolError(f"a {self._state.value} client cannot {trigger.value}") from None

    # -- bytes ---------------------------------------------------------------------------------

    def initiate(self) -> bytes:
        """C0 and C1: the first bytes to send."""
        return self._handshake.initiate()

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the server (``RemoteProtocolError`` if they break the protocol)."""
        if self._state is ClientState.HANDSHAKE:
            self._handshake.receive_data(data)
            self._out += self._handshake.data_to_send()
            if not self._handshake.complete:
                return
            self._move(_Trigger.HANDSHAKEN)
            self._start()
            data = self._handshake.leftover()
        if data:
            self.session.receive_data(data)

    def data_to_send(self) -> bytes:
        """What to write now (handshake, commands, acknowledgements), in order."""
        if self._state is not ClientState.HANDSHAKE:
            self._out += self.session.data_to_send()
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more bytes are needed."""
        while not self._events:
            if self._state is ClientState.HANDSHAKE:
                return None
            event = self.session.next_event()
            if event is None:
                return None
            self._handle(event)
        return self._events.popleft()

    # -- the conversation ------------------------------------------------------------------------

    def _start(self) -> None:
        session = self.session
        session.set_chunk_size(self._chunk_size)
        extra: dict[str, Any] = {"fourCcList": list(FOURCC_LIST)}
        if self.mode is ClientMode.PLAY:
            extra.update(fpad=False, capabilities=15.0, audioCodecs=4071.0, videoCodecs=252.0, videoFunction=1.0)
        tid = session.connect(self.url.app, self.url.tc_url, extra=extra)
        self._pending[tid] = "connect"

    def _after_connect(self) -> None:
        session = self.session
        session.send_window_ack_size(self._window)
        if self.mode is ClientMode.PUBLISH:
            name = self.url.stream_with_query
            session.release_stream(name)
            session.fc_publish(name)
        self._pending[session.create_stream()] = "createStream"

    def _after_create(self, stream_id: int) -> None:
        self.stream_id = stream_id
        session = self.session
        name = self.url.stream_with_query
        if self.mode is ClientMode.PUBLISH:
            session.publish(stream_id, name)
        else:
            session.play(stream_id, name, start=-2000.0)
            session.send_set_buffer_length(stream_id, self._buffer_length)

    def _handle(self, event: Event) -> None:
        if isinstance(event, (MediaMessage, DataMessage)):
            # FFmpeg's own server (-listen 1) sends media on message stream 0: taken too.
            if self._state is ClientState.PLAYING and event.stream_id in (self.stream_id, 0):
                if isinstance(event, DataMessage) and event.body.startswith(_SAMPLE_ACCESS):
                    return
                self._events.append(event)
        elif isinstance(event, CommandReceived):
            self._on_command(event)
        elif isinstance(event, UserControlReceived):
            if (
                event.event_type == UserControlEvent.STREAM_EOF
                and self._state is ClientState.PLAYING
                and event.data == self.stream_id
            ):
                self._end("StreamEOF", "the server sent Stream EOF")
        elif isinstance(event, ControlReceived):
            if event.type_id == _PEER_BW and event.values and event.values[0] != self._window:
                self._window = event.values[0]
                self.session.send_window_ack_size(self._window)

    def _on_command(self, event: CommandReceived) -> None:
        name = event.name
        if name in ("_result", "_error"):
            stage = self._pending.pop(event.transaction_id, None)
            if stage is None:
                return  # releaseStream, FCPublish... results: nothing to do
            if name == "_error":
                info = event.info
                self._refuse(stage, str(info.get("code", "_error")), str(info.get("description", "")))
            elif stage == "connect":
                self.server_info = event.info
                self._move(_Trigger.CONNECTED)
                self._events.append(Connected(event.command_object, event.info))
                self._after_connect()
            elif stage == "createStream":
                stream_id = stream_id_arg(event.arguments[0]) if event.arguments else None
                if stream_id is None or stream_id == 0:
                    self._refuse(stage, "BadStreamId", f"createStream answered {event.arguments[:1]!r}")
                    return
                self._move(_Trigger.CREATED)
                self._after_create(stream_id)
        elif name == "onStatus":
            info = event.info
            code = str(info.get("code", ""))
            level = str(info.get("level", "status"))
            description = str(info.get("description", ""))
            state = self._state
            if state is ClientState.STARTING:
                if level == "error":
                    self._refuse(self.mode.value, code, description)
                elif code == "NetStream.Publish.Start" and self.mode is ClientMode.PUBLISH:
                    self._started(_Trigger.PUBLISHING)
                elif code == "NetStream.Play.Start" and self.mode is ClientMode.PLAY:
                    self._started(_Trigger.PLAYING)
            elif state in (ClientState.PUBLISHING, ClientState.PLAYING):
                if level == "error" or code in _ENDING_CODES:
                    self._end(code, description)

    def _started(self, trigger: _Trigger) -> None:
        self._move(trigger)
        assert self.stream_id is not None
        self._events.append(StreamStarted(self.stream_id, self.mode.value))

    def _refuse(self, stage: str, code: str, description: str) -> None:
        self._move(_Trigger.REFUSED)
        self._events.append(Refused(stage, code, description))

    def _end(self, code: str, description: str) -> None:
        self._move(_Trigger.ENDED)
        self._events.append(StreamEnded(code, description))

    # -- publishing ----------------------------------------------------------------------------

    def frame_buffers(self, frame: Frame) -> list[bytes | memoryview]:
        """The buffers that send ``frame`` on our stream (shared with every other connection
        that sends it at this chunk size; metadata gets ``@setDataFrame``). Write them after
        :meth:`data_to_send`'s output."""
        if self._state is not ClientState.PUBLISHING or self.stream_id is None:
            raise LocalProtocolError(f"cannot send media while {self._state.value}")
        data = frame_chunks(frame, self.session.out_chunk_size, publisher=True)
        return with_stream_id(data, self.stream_id)

    # -- ending --------------------------------------------------------------------------------

    def close(self) -> None:
        """Say goodbye (``FCUnpublish`` and ``deleteStream`` after a publish, ``deleteStream``
        after a play) if the conversation got that far; the client is ``CLOSED`` afterwards.
        Idempotent; write :meth:`data_to_send` and close the socket."""
        if self._state is ClientState.CLOSED:
            return
        session = self.session
        if self.stream_id is not None and not session.broken:
            if self._state is ClientState.PUBLISHING:
                session.fc_unpublish(self.url.stream_with_query)
            session.delete_stream(self.stream_id)
        self._state = CLIENT_TRANSITIONS[self._state, _Trigger.CLOSE]
