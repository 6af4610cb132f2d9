"""HLS helpers the tests share: follow an entry playlist to its media playlist.

The MPEG-TS variant's ``index.m3u8`` is a one-variant multivariant playlist naming the media
playlist with the player's session id (``index.m3u8?...&arcly_session=ID``, see
:mod:`arcly_trio.services.hls_routes`); tests that read the media playlist follow it.
"""

from __future__ import annotations

from typing import Any

import trio

__all__ = ["media_playlist", "parts_made", "publish_faster", "uris"]


def uris(playlist: bytes) -> list[str]:
    """The URI lines of a playlist."""
    return [line for line in playlist.decode().splitlines() if line and not line.startswith("#")]


async def media_playlist(http_get: Any, port: int, target: str) -> tuple[int, dict[str, str], bytes, str]:
    """``GET target``; when it is a multivariant playlist, its first variant's playlist instead:
    the status, headers and body of the last answer, and the target it was asked at."""
    status, headers, body = await http_get(port, target)
    if status == 200 and b"#EXT-X-STREAM-INF" in body:
        target = f"{target.partition('?')[0].rpartition('/')[0]}/{uris(body)[0]}"
        status, headers, body = await http_get(port, target)
    return status, headers, body, target


def parts_made(hls: Any) -> int:
    """How many parts the HLS service made of ``live/demo``, every rendition, open or in segments."""
    renditions = hls.live["live/demo"].packager.renditions.values()
    return sum(len(r.open_parts) + sum(len(s.parts) for s in r.segments) for r in renditions)


async def publish_faster(publisher: Any, frames: list[Any], pos: int, count: int = 300, speed: float = 4) -> int:
    """Publish up to ``count`` of ``frames`` from ``pos`` at ``speed`` times real time (their
    decode times apart); the position reached."""
    start = pos
    while pos + 1 < min(len(frames), start + count):
        await publisher.send(frames[pos])
        await trio.sleep(max(0, frames[pos + 1].dts - frames[pos].dts) / (1000 * speed))
        pos += 1
    return pos
