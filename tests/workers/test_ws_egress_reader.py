"""A server WebSocket reads its peer with the hand-written frame reader and answers as before.

The reader itself is proven equivalent to wsproto in ``tests/protocols/test_ws_reader.py``;
here a wsproto client talks to :class:`~arcly_trio.workers.http.ws_egress.EgressWebSocket` over
an in-memory stream: a text message in fragments with a ping between them, binary messages in
one frame and in three, the ping answered with its payload, the peer's close (with and without
a code) answered in kind, and a frame that breaks the protocol closed with wsproto's code.
``trio.fail_after`` bounds every test; the one that waits for nothing to come runs on the
autojump clock.

Error policy: plain asserts.
"""

from __future__ import annotations

import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, Request, TextMessage
from wsproto.frame_protocol import CloseReason

from arcly_trio.protocols.http.websocket import WebSocketLimits
from arcly_trio.workers.egress import Egress
from arcly_trio.workers.http.ws_egress import EgressWebSocket, accept

LIMITS = WebSocketLimits(1 << 20)


async def connected() -> tuple[EgressWebSocket, wsproto.WSConnection, trio.testing.MemoryStream]:
    server_side, client_side = trio.testing.memory_stream_pair()
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    ws = accept(
        Egress(server_side, write_timeout=5),
        client.send(Request(host="x", target="/")),
        [],
        subprotocol=None,
        limits=LIMITS,
    )
    assert await answers(ws, client, client_side) == []  # the 101
    return ws, client, client_side


async def answers(ws: EgressWebSocket, client: wsproto.WSConnection, stream: trio.testing.MemoryStream) -> list[object]:
    """What the server wrote so far, read by the client (the 101 answer the first time)."""
    await ws.egress.drain()
    client.receive_data(await stream.receive_some(65536))
    return [event for event in client.events() if not isinstance(event, AcceptConnection)]


async def test_messages_in_pieces_pings_and_a_close_with_a_code() -> None:
    with trio.fail_after(10):
        ws, client, stream = await connected()
        big = bytes(range(256)) * 40  # unmasked by translate
        sent = client.send(TextMessage("hé", message_finished=False))
        sent += client.send(Ping(b"are you there"))
        sent += client.send(TextMessage("llo wörld", message_finished=True))
        sent += client.send(BytesMessage(big))
        sent += client.send(BytesMessage(b"ab", message_finished=False))
        sent += client.send(BytesMessage(b"", message_finished=False))
        sent += client.send(BytesMessage(b"c" * 700, message_finished=True))
        await stream.send_all(sent)
        assert await ws.receive_message() == "héllo wörld"
        assert await ws.receive_message() == big
        assert await ws.receive_message() == b"ab" + b"c" * 700
        assert [type(event) for event in await answers(ws, client, stream)] == [Pong]
        await stream.send_all(client.send(CloseConnection(4000, "bye")))
        assert await ws.receive_message() is None
        assert ws.closed and ws.close_code == 4000 and ws.violation is None
        (answer,) = await answers(ws, client, stream)
        assert isinstance(answer, CloseConnection) and (answer.code, answer.reason) == (4000, "bye")


async def test_a_close_without_a_code_is_answered_without_one() -> None:
    with trio.fail_after(10):
        ws, client, stream = await connected()
        await stream.send_all(client.send(CloseConnection(CloseReason.NO_STATUS_RCVD)))  # no payload
        assert not await ws.serve_peer()
        assert ws.close_code == 1005
        (answer,) = await answers(ws, client, stream)
        assert isinstance(answer, CloseConnection) and answer.code == 1005


async def test_a_frame_that_breaks_the_protocol_is_closed_with_wsprotos_code(autojump_clock: object) -> None:
    with trio.fail_after(10):
        ws, client, stream = await connected()
        await stream.send_all(bytes((0x81, 0x81)) + bytes(4) + b"\xff")  # text that is not UTF-8
        assert await ws.receive_message() is None
        (answer,) = await answers(ws, client, stream)
        assert isinstance(answer, CloseConnection) and answer.code == 1007
        ws.send_text("nothing after the close")  # dropped, not written after the close frame
        await ws.egress.drain()
        with trio.move_on_after(0.5):  # virtual time: nothing was written, the read waits in vain
            assert not await stream.receive_some(65536)
