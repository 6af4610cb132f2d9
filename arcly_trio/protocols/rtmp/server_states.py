"""Every state and transition of the RTMP server session, in one place (h11's ``_state.py``).

:class:`~.server_session.ServerSession` drives two machines and changes their states only
through the tables here:

* the connection: :class:`ConnectionState`, moved by a :class:`ConnectionTrigger` along
  :data:`CONNECTION_TRANSITIONS` (:func:`next_connection_state`): ``NEW`` ->
  ``CONNECT_PENDING`` (a ``connect`` arrived) -> ``CONNECTED`` (``accept_connect()``) or
  ``REJECTED`` (``reject_connect()``);
* each message stream: :class:`StreamState`, moved by a :class:`StreamTrigger` along
  :data:`STREAM_TRANSITIONS` (:func:`next_stream_state`): ``IDLE`` -> ``PUBLISH_PENDING`` /
  ``PLAY_PENDING`` (a ``publish``/``play``) -> ``PUBLISHING`` / ``PLAYING`` (accepted) or back
  to ``IDLE`` (refused); ``closeStream`` and ``deleteStream`` bring it back to ``IDLE``.

:class:`Decision` names what a paused session waits for the adapter to decide. The three
state enums are ``str`` enums, so they compare equal to their values (``"connected"``,
``"publishing"``, ``"play"``...).

Error policy: a move the tables do not have raises. For the connection, a ``connect`` from the
peer when one was received already is the peer's fault
(:class:`~arcly_trio.core.errors.RemoteProtocolError`), an accept or reject with no ``connect``
waiting the caller's (:class:`~arcly_trio.core.errors.LocalProtocolError`). For a stream, every
illegal move is the caller's (``LocalProtocolError``): the session checks a stream's state
before it lets a peer's command move it.
"""

from __future__ import annotations

import enum
from typing import Final

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ConnectionState",
    "ConnectionTrigger",
    "StreamState",
    "StreamTrigger",
    "Decision",
    "CONNECTION_TRANSITIONS",
    "STREAM_TRANSITIONS",
    "next_connection_state",
    "next_stream_state",
]


class ConnectionState(str, enum.Enum):
    """Where an RTMP connection is in its ``connect``."""

    NEW = "new"
    CONNECT_PENDING = "connect-pending"
    CONNECTED = "connected"
    REJECTED = "rejected"


class ConnectionTrigger(enum.Enum):
    """What moves a connection along :data:`CONNECTION_TRANSITIONS`."""

    CONNECT = "connect"  # the peer sent ``connect``
    ACCEPT = "accept"  # the server called ``accept_connect()``
    REJECT = "reject"  # the server called ``reject_connect()``


class StreamState(str, enum.Enum):
    """Where one message stream of a connection is."""

    IDLE = "idle"
    PUBLISH_PENDING = "publish-pending"
    PUBLISHING = "publishing"
    PLAY_PENDING = "play-pending"
    PLAYING = "playing"


class StreamTrigger(enum.Enum):
    """What moves a message stream along :data:`STREAM_TRANSITIONS`."""

    PUBLISH = "publish"  # the peer sent ``publish``
    PLAY = "play"  # the peer sent ``play``
    ACCEPT = "accept"  # the server called ``accept_publish()`` or ``accept_play()``
    REJECT = "reject"  # the server called ``reject_publish()`` or ``reject_play()``
    CLOSE = "close"  # the peer sent ``closeStream`` or ``deleteStream``


class Decision(str, enum.Enum):
    """What a paused session waits for the adapter to decide."""

    CONNECT = "connect"
    PUBLISH = "publish"
    PLAY = "play"


_C = ConnectionState
_CT = ConnectionTrigger

#: Every transition of the connection: ``(state, trigger) -> next state``.
CONNECTION_TRANSITIONS: Final[dict[tuple[ConnectionState, ConnectionTrigger], ConnectionState]] = {
    (_C.NEW, _CT.CONNECT): _C.CONNECT_PENDING,
    (_C.CONNECT_PENDING, _CT.ACCEPT): _C.CONNECTED,
    (_C.CONNECT_PENDING, _CT.REJECT): _C.REJECTED,
}


def next_connection_state(state: ConnectionState, trigger: ConnectionTrigger) -> ConnectionState:
    """Where ``trigger`` moves a connection that is in ``state`` (:data:`CONNECTION_TRANSITIONS`).

    A move the table does not have raises: a ``connect`` from the peer when one was received
    already is the peer's fault (:class:`~arcly_trio.core.errors.RemoteProtocolError`); an
    accept or reject with no ``connect`` waiting is the caller's
    (:class:`~arcly_trio.core.errors.LocalProtocolError`).
    """
    try:
        return CONNECTION_TRANSITIONS[state, trigger]
    except KeyError:
        if trigger is ConnectionTrigger.CONNECT:
            raise RemoteProtocolError(f"a second connect on one connection (it is {state.value})") from None
        raise LocalProtocolError(f"cannot {trigger.value} a connect: the connection is {state.value}") from None


_S = StreamState
_T = StreamTrigger

#: Every transition of a message stream: ``(state, trigger) -> next state``.
STREAM_TRANSITIONS: Final[dict[tuple[StreamState, StreamTrigger], StreamState]] = {
    (_S.IDLE, _T.PUBLISH): _S.PUBLISH_PENDING,
    (_S.IDLE, _T.PLAY): _S.PLAY_PENDING,
    (_S.PUBLISH_PENDING, _T.ACCEPT): _S.PUBLISHING,
    (_S.PUBLISH_PENDING, _T.REJECT): _S.IDLE,
    (_S.PLAY_PENDING, _T.ACCEPT): _S.PLAYING,
    (_S.PLAY_PENDING, _T.REJECT): _S.IDLE,
    (_S.IDLE, _T.CLOSE): _S.IDLE,
    (_S.PUBLISHING, _T.CLOSE): _S.IDLE,
    (_S.PLAYING, _T.CLOSE): _S.IDLE,
}


def next_stream_state(state: StreamState, trigger: StreamTrigger) -> StreamState:
    """Where ``trigger`` moves a message stream that is in ``state`` (:data:`STREAM_TRANSITIONS`).

    A move the table does not have raises :class:`~arcly_trio.core.errors.LocalProtocolError`.
    """
    try:
        return STREAM_TRANSITIONS[state, trigger]
    except KeyError:
        raise LocalProtocolError(f"a {state.value} stream cannot {trigger.value}") from None
