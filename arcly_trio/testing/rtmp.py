"""A raw RTMP client for tests: the sans-IO client session on a trio socket, nothing hidden.

What it is for: tests and benchmarks that must send what a well-behaved client never would
(half a handshake, half a message, a huge chunk, a fresh message stream id per play) or read
exactly what the server answers. For ordinary publishing and playing use
:mod:`arcly_trio.clients.rtmp`.

:class:`RawRtmpClient` does the handshake (:meth:`~RawRtmpClient.handshake`, or only half of
it), sends what :attr:`~RawRtmpClient.session` has queued (:meth:`~RawRtmpClient.flush`) and
reads events (:meth:`~RawRtmpClient.read_event`, :meth:`~RawRtmpClient.command`), keeping every
event it read in :attr:`~RawRtmpClient.events`. Everything else is a call on the session.

Error policy: the server closing the connection where an answer was awaited raises
``ConnectionError`` (saying where); socket errors come out as trio's.
"""

from __future__ import annotations

from typing import Self

import trio

from arcly_trio.protocols.rtmp import ClientSession, CommandReceived, Event
from arcly_trio.protocols.rtmp.handshake import ClientHandshake

__all__ = ["RawRtmpClient"]

_RECV = 65536
_ANSWERS = ("_result", "_error", "onStatus")


class RawRtmpClient:
    """One TCP connection to an RTMP server (see the module docstring)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.session = ClientSession()
        self.events: list[Event] = []
        """Every event read so far, in order."""

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1", local_address: str | None = None) -> Self:
        return cls(await trio.open_tcp_stream(host, port, local_address=local_address))

    async def handshake(self, cut: bool = False) -> None:
        """The client side of the handshake; with ``cut``, half of C0+C1 and nothing more."""
        handshake = ClientHandshake()
        first = handshake.initiate()
        if cut:
            await self.stream.send_all(first[: len(first) // 2])
            return
        await self.stream.send_all(first)
        while not handshake.complete:
            data = await self.stream.receive_some(_RECV)
            if not data:
                raise ConnectionError("the server closed the connection during the handshake")
            handshake.receive_data(data)
            out = handshake.data_to_send()
            if out:
                await self.stream.send_all(out)
        self.session.receive_data(handshake.leftover())

    async def flush(self) -> None:
        """Send what the session has queued."""
        data = self.session.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def read_event(self, kind: type[Event] = Event) -> Event:
        """Read until an event of ``kind`` arrives (acknowledging and answering pings meanwhile)."""
        while True:
            for event in self.session.events():
                self.events.append(event)
                if isinstance(event, kind):
                    return event
            await self.flush()
            data = await self.stream.receive_some(_RECV)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.session.receive_data(data)

    async def command(self) -> CommandReceived:
        """The next ``_result``, ``_error`` or ``onStatus`` command from the server."""
        while True:
            event = await self.read_event(CommandReceived)
            assert isinstance(event, CommandReceived)
            if event.name in _ANSWERS:
                return event

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
