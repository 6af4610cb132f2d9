"""Loopback networking for the tests: a free port for a tool that must be told one, a black hole
that accepts connections and never answers.

Error policy: nothing is caught (an ``OSError`` binding a port fails the test).
"""

from __future__ import annotations

import socket

import trio

HOST = "127.0.0.1"


async def black_hole(*, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    """A TCP server that accepts and never says a word; reports (port, open connections)."""
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    state = {"open": 0, "most": 0}

    async def hold(stream: trio.SocketStream) -> None:
        state["open"] += 1
        state["most"] = max(state["most"], state["open"])
        try:
            while await stream.receive_some(65536):
                pass
        finally:
            state["open"] -= 1

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, hold, [listener])
        task_status.started((listener.socket.getsockname()[1], state))


def free_port() -> int:
    """A port nothing listens on now (for a tool that must be told its port: a small race)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
