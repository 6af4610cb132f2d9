"""RTMP clients for tests.

Well-behaved players and publishers are the project's real client
(:mod:`arcly_trio.clients.rtmp`): :func:`count_media` plays with it. :class:`RawClient` is a TCP
connection driven with the raw sans-IO session, for the tests that must misbehave (send garbage,
stop half-way, skip steps), which the real client never does.
"""

from __future__ import annotations

import trio

from arcly_trio.clients.rtmp import open_rtmp_player
from arcly_trio.protocols.rtmp import Event
from arcly_trio.testing.rtmp import RawRtmpClient

HOST = "127.0.0.1"


class RawClient(RawRtmpClient):
    """One TCP connection to the server (the testing kit's raw client), with the checks the
    tests want."""

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        self.address: tuple[str, int] = stream.socket.getsockname()[:2]

    @property
    def tag(self) -> str:
        """How the server's log lines name this connection."""
        return f"{self.address[0]}:{self.address[1]}"

    async def connect(self, app: str = "live", port: int = 1935) -> None:
        await self.handshake()
        self.session.connect(app, f"rtmp://{HOST}:{port}/{app}")
        await self.flush()
        result = await self.command()
        assert result.name == "_result", result

    async def create_stream(self) -> int:
        self.session.create_stream()
        await self.flush()
        result = await self.command()
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



async def count_media(port: int, name: str, counter: list[int], *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Play ``live/{name}`` with the real RTMP client, adding every frame to ``counter[0]``
    (a healthy player), until the stream or the connection ends."""
    async with open_rtmp_player(f"rtmp://{HOST}:{port}/live/{name}") as player:
        task_status.started()
        while batch := await player.next_batch():
            counter[0] += len(batch)
