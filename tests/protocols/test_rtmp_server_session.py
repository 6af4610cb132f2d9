"""The RTMP server session's connection states (``protocols/rtmp/server_session.py``): one
transition table, one method that applies it, an illegal move refused with a protocol error."""

from __future__ import annotations

import ast
import inspect
import itertools

import pytest

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.media import amf0
from arcly_trio.protocols.rtmp import ClientSession, ConnectRequest, ServerSession
from arcly_trio.protocols.rtmp import server_session
from arcly_trio.protocols.rtmp.server_session import (
    CONNECTION_TRANSITIONS,
    ConnectionState,
    ConnectionTrigger,
    next_connection_state,
)

SECOND_CONNECT = amf0.encode("connect", 2.0, {"app": "live"})


def pump(source: ServerSession | ClientSession, target: ServerSession | ClientSession) -> None:
    data = source.data_to_send()
    if data:
        target.receive_data(data)


def session_in(state: ConnectionState) -> tuple[ServerSession, ClientSession]:
    """A server session brought to ``state`` by a real conversation."""
    server, client = ServerSession(), ClientSession()
    if state is ConnectionState.NEW:
        return server, client
    client.connect("live")
    pump(client, server)
    assert [type(event) for event in server.events()] == [ConnectRequest]
    if state is ConnectionState.CONNECTED:
        server.accept_connect()
    elif state is ConnectionState.REJECTED:
        server.reject_connect("no")
    assert server.state is state
    return server, client


def apply(server: ServerSession, client: ClientSession, trigger: ConnectionTrigger) -> None:
    """Cause ``trigger`` through the session's public side: the peer's bytes or the server's call."""
    if trigger is ConnectionTrigger.CONNECT:
        if server.state is ConnectionState.NEW:
            client.connect("live")
        else:
            client.send_message(3, 20, 0, 0, SECOND_CONNECT)
        pump(client, server)
        list(server.events())
    elif trigger is ConnectionTrigger.ACCEPT:
        server.accept_connect()
    else:
        server.reject_connect("no")


def test_the_table_names_every_legal_move() -> None:
    assert CONNECTION_TRANSITIONS == {
        (ConnectionState.NEW, ConnectionTrigger.CONNECT): ConnectionState.CONNECT_PENDING,
        (ConnectionState.CONNECT_PENDING, ConnectionTrigger.ACCEPT): ConnectionState.CONNECTED,
        (ConnectionState.CONNECT_PENDING, ConnectionTrigger.REJECT): ConnectionState.REJECTED,
    }


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(ConnectionState, ConnectionTrigger)))
def test_every_move_is_in_the_table_or_refused(state: ConnectionState, trigger: ConnectionTrigger) -> None:
    if (state, trigger) in CONNECTION_TRANSITIONS:
        assert next_connection_state(state, trigger) is CONNECTION_TRANSITIONS[state, trigger]
        return
    expected = RemoteProtocolError if trigger is ConnectionTrigger.CONNECT else LocalProtocolError
    with pytest.raises(expected, match=state.value):
        next_connection_state(state, trigger)


@pytest.mark.parametrize(("state", "trigger"), list(CONNECTION_TRANSITIONS))
def test_every_legal_move_works_in_a_session(state: ConnectionState, trigger: ConnectionTrigger) -> None:
    server, client = session_in(state)
    apply(server, client, trigger)
    assert server.state is CONNECTION_TRANSITIONS[state, trigger]
    assert server.connected is (server.state is ConnectionState.CONNECTED)


@pytest.mark.parametrize("state", [ConnectionState.CONNECTED, ConnectionState.REJECTED])
def test_a_second_connect_is_the_peers_protocol_error(state: ConnectionState) -> None:
    server, client = session_in(state)
    with pytest.raises(RemoteProtocolError, match="a second connect on one connection"):
        apply(server, client, ConnectionTrigger.CONNECT)
    assert server.state is state


@pytest.mark.parametrize(("state", "trigger"), [
    (state, trigger)
    for state, trigger in itertools.product(ConnectionState, [ConnectionTrigger.ACCEPT, ConnectionTrigger.REJECT])
    if (state, trigger) not in CONNECTION_TRANSITIONS
])
def test_accepting_or_rejecting_without_a_connect_is_the_callers_error(state: ConnectionState,
                                                                      trigger: ConnectionTrigger) -> None:
    server, client = session_in(state)
    with pytest.raises(LocalProtocolError):
        apply(server, client, trigger)
    assert server.state is state


def test_the_connection_state_is_assigned_in_one_place() -> None:
    """Besides the initial ``NEW``, only the method that applies the table sets the state."""
    tree = ast.parse(inspect.getsource(server_session))
    setters = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Assign) and any(ast.unparse(target) == "self._state" for target in node.targets):
                    setters.append((function.name, ast.unparse(node.value)))
    assert sorted(setters) == [("__init__", "ConnectionState.NEW"),
                               ("_advance", "next_connection_state(self._state, trigger)")]
