"""RTMP clients for tests.

Well-behaved players and publishers are the project's real client
(:mod:`arcly_trio.clients.rtmp`): :func:`count_media` plays with it. :class:`RawClient` is a TCP
connection driven with the raw sans-IO session, for the tests that must misbehave (send garbage,
stop half-way, skip steps), which the real client never does.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from arcly_trio.clients.rtmp import open_rtmp_player
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import flv
from arcly_trio.protocols.rtmp import CSID_DATA, Event
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


async def count_media(
    port: int, name: str, counter: list[int], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Play ``live/{name}`` with the real RTMP client, adding every frame to ``counter[0]``
    (a healthy player), until the stream or the connection ends."""
    async with open_rtmp_player(f"rtmp://{HOST}:{port}/live/{name}") as player:
        task_status.started()
        while batch := await player.next_batch():
            counter[0] += len(batch)


async def publish_large_gop(port: int, name: str, frames: Sequence[Frame], deltas: int, delta_size: int) -> RawClient:
    """Publish ``live/{name}`` with the raw client: the configs and first keyframe of ``frames``
    (the demo clip), then ``deltas`` H.264 inter frames of ``delta_size`` bytes (one large
    GOP). The connection stays open: close it to end the session."""
    configs = [f for f in frames if f.config]
    key = next(f for f in frames if f.keyframe and not f.config)
    client = await RawClient.open(port)
    await client.connect("live", port)
    stream_id = await client.create_stream()
    client.session.publish(stream_id, name)
    await client.flush()
    await client.command()
    for frame in [*configs, key]:
        if frame.kind is FrameKind.DATA:
            client.session.send_message(CSID_DATA, 18, stream_id, 0, flv.tag_body(frame))
        else:
            client.session.send_media(stream_id, 9 if frame.is_video else 8, 0, flv.tag_body(frame))
    for i in range(1, deltas + 1):
        client.session.send_media(stream_id, 9, 33 * i, b"\x27\x01\x00\x00\x00" + bytes(delta_size))
        await client.flush()
    return client
