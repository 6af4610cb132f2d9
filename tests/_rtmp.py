"""RTMP clients for tests.

Well-behaved players and publishers are the project's real client
(:mod:`arcly_trio.clients.rtmp`): :func:`count_media` plays with it. :class:`RawClient` is a TCP
connection driven with the raw sans-IO session, for the tests that must misbehave (send garbage,
stop half-way, skip steps), which the real client never does.
"""

from __future__ import annotations

import trio

from arcly_trio.clients.rtmp import open_rtmp_player
from arcly_trio.protocols.rtmp import ClientSession, CommandReceived, Event
from arcly_trio.protocols.rtmp.handshake import ClientHandshake

HOST = "127.0.0.1"


class RawClient:
    """One TCP connection to the server, with the sans-IO client session once past the handshake."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.address: tuple[str, int] = stream.socket.getsockname()[:2]
        self.session = ClientSession()
        self.events: list[Event] = []

    @property
    def tag(self) -> str:
        """How the server's log lines name this connection."""
        return f"{self.address[0]}:{self.address[1]}"

    @classmethod
    async def open(cls, port: int, local_address: str | None = None) -> RawClient:
        return cls(await trio.open_tcp_stream(HOST, port, local_address=local_address))

    async def handshake(self) -> None:
        handshake = ClientHandshake()
        await self.stream.send_all(handshake.initiate())
        while not handshake.complete:
            data = await self.stream.receive_some(65536)
            assert data, "the server closed during the handshake"
            handshake.receive_data(data)
            out = handshake.data_to_send()
            if out:
                await self.stream.send_all(out)
        self.session.receive_data(handshake.leftover())

    async def flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def read_event(self, kind: type[Event] = Event) -> Event:
        """Read until an event of ``kind`` arrives (earlier events are kept in ``events``)."""
        while True:
            for event in self.session.events():
                self.events.append(event)
                if isinstance(event, kind):
                    return event
            await self.flush()  # acknowledgements, ping responses
            data = await self.stream.receive_some(65536)
            assert data, "the server closed the connection"
            self.session.receive_data(data)

    async def status(self) -> CommandReceived:
        """The next ``onStatus`` (or ``_result``/``_error``) command from the server."""
        while True:
            event = await self.read_event(CommandReceived)
            assert isinstance(event, CommandReceived)
            if event.name in ("onStatus", "_result", "_error"):
                return event

    async def connect(self, app: str = "live", port: int = 1935) -> None:
        await self.handshake()
        self.session.connect(app, f"rtmp://{HOST}:{port}/{app}")
        await self.flush()
        result = await self.status()
        assert result.name == "_result", result

    async def create_stream(self) -> int:
        self.session.create_stream()
        await self.flush()
        result = await self.status()
        assert result.name == "_result", result
        return int(result.arguments[0])

    async def read_until_closed(self) -> list[Event]:
        """Read (and parse) until the server closes the connection; return every event."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset is a close too
                data = b""
            if not data:
                self.events.extend(self.session.events())
                return self.events
            self.session.receive_data(data)
            self.events.extend(self.session.events())

    async def assert_closed_by_server(self) -> None:
        """The server closes its end: we read EOF (possibly after whatever it had to say)."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not data:
                return

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def count_media(port: int, name: str, counter: list[int], *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Play ``live/{name}`` with the real RTMP client, adding every frame to ``counter[0]``
    (a healthy player), until the stream or the connection ends."""
    async with open_rtmp_player(f"rtmp://{HOST}:{port}/live/{name}") as player:
        task_status.started()
        while batch := await player.next_batch():
            counter[0] += len(batch)
