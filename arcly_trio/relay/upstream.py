"""One upstream connection as batches of frames, whatever its protocol (sans the details).

:func:`open_upstream` plays ``rtmp://``/``rtmps://`` URLs with the RTMP client and ``http://``/
``https://`` URLs (HTTP-FLV) with the FLV client, ``rtsp://`` URLs (cameras) with the RTSP pull
(:func:`~arcly_trio.relay.rtsp_pull.open_rtsp_player`); all give an :class:`Upstream`: ``next_batch()``
(``[]`` once it ended), ``end`` (why), ``bytes_received``.

Error policy: what the clients raise on entry (``RemoteRefused``, ``ConnectionLost``,
``RemoteProtocolError``); ``ValueError`` for a URL of another scheme.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from arcly_trio.clients.flv import open_flv_player
from arcly_trio.clients.rtmp import open_rtmp_player
from arcly_trio.core.frame import Frame
from arcly_trio.core.redact import redact_url

__all__ = ["Upstream", "open_upstream"]


class Upstream(Protocol):
    end: str | None

    @property
    def bytes_received(self) -> int: ...

    async def next_batch(self, limit: int = ...) -> list[Frame]: ...


@asynccontextmanager
async def open_upstream(
    url: str, *, unix_socket: str | None = None, timeout: float = 10.0, read_timeout: float = 30.0
) -> AsyncIterator[Upstream]:
    """Play ``url`` (see the module docstring) for the duration of the block."""
    scheme = url.partition(":")[0].lower()
    if scheme in ("rtmp", "rtmps"):
        async with open_rtmp_player(url, unix_socket=unix_socket, timeout=timeout, read_timeout=read_timeout) as player:
            yield player
    elif scheme in ("http", "https"):
        async with open_flv_player(
            url, unix_socket=unix_socket, timeout=timeout, read_timeout=read_timeout
        ) as flv_player:
            yield flv_player
    elif scheme == "rtsp":
        from arcly_trio.relay.rtsp_pull import open_rtsp_player  # noqa: PLC0415  (loads PyAV)

        async with open_rtsp_player(url, timeout=timeout, read_timeout=read_timeout) as rtsp_player:
            yield rtsp_player
    else:
        raise ValueError(f"upstreams are rtmp://, rtmps://, http://, https:// or rtsp://, not {redact_url(url)!r}")
