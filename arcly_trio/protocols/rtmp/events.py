"""The events of an RTMP session: what :meth:`next_event` returns (sans-IO, frozen attrs).

Server side (:class:`~.server_session.ServerSession`): requests that need a decision
(:class:`ConnectRequest`, :class:`PublishRequest`, :class:`PlayRequest`), what the client did
that the adapter may want to know (:class:`StreamCreated`, :class:`StreamDeleted`,
:class:`StreamCloseRequested`, :class:`StreamUnpublishRequested`, :class:`PauseRequest`,
:class:`UnknownCommand`, :class:`PingResponseReceived`, :class:`BufferLengthChanged`), and the
media it publishes (:class:`MediaMessage`, :class:`DataMessage`). Client side
(:class:`~.client_session.ClientSession`): everything the server sends
(:class:`CommandReceived`, :class:`UserControlReceived`, :class:`ControlReceived`, media and
data). The client's conversation (:class:`~.client.RtmpClient`) turns those into outcomes:
:class:`Connected`, :class:`StreamStarted`, :class:`Refused`, :class:`StreamEnded`.

Error policy: events are plain values and never raise, except :attr:`DataMessage.values`,
which decodes on demand.
"""

from __future__ import annotations

from typing import Any

import attrs

from arcly_trio.media import amf0

__all__ = [
    "Event",
    "ConnectRequest",
    "StreamCreated",
    "PublishRequest",
    "PlayRequest",
    "PauseRequest",
    "StreamDeleted",
    "StreamCloseRequested",
    "StreamUnpublishRequested",
    "UnknownCommand",
    "MediaMessage",
    "DataMessage",
    "PingResponseReceived",
    "BufferLengthChanged",
    "CommandReceived",
    "UserControlReceived",
    "ControlReceived",
    "Connected",
    "StreamStarted",
    "Refused",
    "StreamEnded",
]


class Event:
    """Base class of everything :meth:`ServerSession.next_event` (or the client's) returns."""

    __slots__ = ()


@attrs.frozen(slots=True)
class ConnectRequest(Event):
    """The client sent ``connect``; answer with ``accept_connect()`` or ``reject_connect()``.

    ``app`` is the command object's ``app`` without its query string and trailing ``/``;
    ``query`` merges the query strings of ``tcUrl`` and ``app`` (``app``'s win), e.g. from
    ``rtmp://host/live?token=x`` or an app of ``live?token=x``. ``arguments`` are the optional
    user arguments after the command object.
    """

    transaction_id: float
    app: str
    tc_url: str
    query: dict[str, str]
    command_object: dict[str, Any]
    arguments: tuple[Any, ...] = ()

    def announces(self, fourcc: str) -> bool:
        """Whether the client's Enhanced RTMP ``fourCcList`` names ``fourcc`` (``"Opus"``...) or
        ``"*"`` (any codec). Anything else a peer put there counts as not announcing it."""
        announced = self.command_object.get("fourCcList")
        if not isinstance(announced, list):
            return False
        return any(item == fourcc or item == "*" for item in announced if isinstance(item, str))


@attrs.frozen(slots=True)
class StreamCreated(Event):
    """``createStream`` allocated message stream ``stream_id`` (already answered)."""

    stream_id: int
    transaction_id: float


@attrs.frozen(slots=True)
class PublishRequest(Event):
    """``publish`` on ``stream_id``; answer ``accept_publish()`` or ``reject_publish()``.

    ``name`` is the stream name without its query string, ``query`` the parsed query
    (``stream?key=x``); ``publish_type`` is ``live``, ``record`` or ``append`` as sent.
    """

    stream_id: int
    name: str
    query: dict[str, str]
    publish_type: str
    transaction_id: float


@attrs.frozen(slots=True)
class PlayRequest(Event):
    """``play`` on ``stream_id``; answer ``accept_play()`` or ``reject_play()``.

    ``start`` (seconds, or -2 any / -1 live; FFmpeg sends -2000) and ``duration`` are as sent,
    defaulting to -2 and -1; ``reset`` defaults to true.
    """

    stream_id: int
    name: str
    query: dict[str, str]
    start: float
    duration: float
    reset: bool
    transaction_id: float


@attrs.frozen(slots=True)
class PauseRequest(Event):
    """``pause`` on ``stream_id``: ``paused`` true to pause, false to resume at ``position`` ms.

    Answer with ``accept_pause()`` if the adapter supports pausing.
    """

    stream_id: int
    paused: bool
    position: float


@attrs.frozen(slots=True)
class StreamDeleted(Event):
    """``deleteStream``: message stream ``stream_id`` is gone (ends its publish or play)."""

    stream_id: int


@attrs.frozen(slots=True)
class StreamCloseRequested(Event):
    """``closeStream`` on ``stream_id``: its publish or play ended; the stream id stays valid."""

    stream_id: int


@attrs.frozen(slots=True)
class StreamUnpublishRequested(Event):
    """``FCUnpublish`` of ``name`` (already answered); ``deleteStream`` usually follows."""

    name: str
    transaction_id: float


@attrs.frozen(slots=True)
class UnknownCommand(Event):
    """A command the session does not know (already answered ``_error`` if it had a tid)."""

    stream_id: int
    name: str
    transaction_id: float
    command_object: Any
    arguments: tuple[Any, ...]


@attrs.frozen(slots=True)
class MediaMessage(Event):
    """An audio (8) or video (9) message; ``timestamp`` in ms, unwrapped (module docstring)."""

    stream_id: int
    type_id: int
    timestamp: int
    payload: bytes


@attrs.frozen(slots=True)
class DataMessage(Event):
    """An AMF0 data message (AMF3 data is unwrapped to this too).

    ``payload`` is the AMF0 bytes as received, ``body`` the payload without a leading
    ``@setDataFrame`` string: for ``@setDataFrame onMetaData {...}`` it is the ``onMetaData``
    body the kernel keeps. Nothing is decoded when the message arrives (a data message is
    passed on as bytes); :attr:`values` decodes the AMF0 on demand, each time it is read.
    """

    stream_id: int
    timestamp: int
    payload: bytes
    body: bytes

    @property
    def values(self) -> list[Any]:
        """The decoded AMF0 values (raises :class:`~arcly_trio.media.amf0.AMF0Error`)."""
        return amf0.decode(self.payload)


@attrs.frozen(slots=True)
class PingResponseReceived(Event):
    """The peer answered a Ping Request of ours with ``timestamp``."""

    timestamp: int


@attrs.frozen(slots=True)
class BufferLengthChanged(Event):
    """The player told its buffer length (user control Set Buffer Length), in ms."""

    stream_id: int
    buffer_length: int


@attrs.frozen(slots=True)
class CommandReceived(Event):
    """(Client side) a command from the server: ``_result``, ``_error``, ``onStatus``..."""

    stream_id: int
    name: str
    transaction_id: float
    command_object: Any
    arguments: tuple[Any, ...]

    @property
    def info(self) -> dict[str, Any]:
        """The first argument when it is an object (``onStatus``/``_result`` information)."""
        if self.arguments and isinstance(self.arguments[0], dict):
            return self.arguments[0]
        return {}


@attrs.frozen(slots=True)
class UserControlReceived(Event):
    """(Client side) a user control event (Stream Begin, Stream EOF, ...)."""

    event_type: int
    data: int
    buffer_length: int = 0


@attrs.frozen(slots=True)
class ControlReceived(Event):
    """(Client side) a protocol control message: ``values`` are its decoded fields.

    Set Chunk Size, Acknowledgement and Window Acknowledgement Size give one value; Set Peer
    Bandwidth gives ``(size, limit type)``.
    """

    type_id: int
    values: tuple[int, ...]


@attrs.frozen(slots=True)
class Connected(Event):
    """(Client conversation) the server accepted ``connect`` with these objects."""

    properties: Any
    information: dict[str, Any]


@attrs.frozen(slots=True)
class StreamStarted(Event):
    """(Client conversation) ``publish`` or ``play`` (``mode``) started on ``stream_id``."""

    stream_id: int
    mode: str


@attrs.frozen(slots=True)
class Refused(Event):
    """(Client conversation) the server refused ``stage`` (``connect``, ``createStream``,
    ``publish`` or ``play``) with ``code`` and ``description`` (the server's text, unescaped)."""

    stage: str
    code: str
    description: str


@attrs.frozen(slots=True)
class StreamEnded(Event):
    """(Client conversation) the server ended our publish or play: ``code`` says how
    (``NetStream.Play.UnpublishNotify``, ``NetStream.Play.Stop``, ``StreamEOF``...)."""

    code: str
    description: str
