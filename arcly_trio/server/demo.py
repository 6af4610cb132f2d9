"""The built-in demo stream: a looping H.264+AAC clip published in real time, in-process.

The clip (``assets/demo.flv``, 10 s, made once by ``scripts/make-demo-clip.sh`` from ffmpeg's
test sources) is published through the same kernel path as any publisher, so every egress
shows it. Each loop shifts the timestamps by the clip's length, so players see one continuous
stream.
"""

from __future__ import annotations

import logging
from importlib import resources

import trio

from arcly_trio.core.errors import PublishEnded, StreamError
from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.engine import Engine
from arcly_trio.media import amf0, flv

__all__ = ["demo_frames", "publish_demo"]

log = logging.getLogger("arcly_trio.demo")

LOOP_MS = 10_000
"""The clip's length: 300 video frames at 30 fps (whole GOPs, so it loops on a keyframe)."""


#: onMetaData fields of a file that a live stream must not announce (players would show a
#: 10 s duration, rtmpdump would report an incomplete download).
FILE_ONLY_METADATA = frozenset({"duration", "filesize", "lasttimestamp", "lastkeyframetimestamp"})


def live_metadata(frame: Frame) -> Frame:
    """``frame`` (an onMetaData frame of a file) as a live stream's: without the fields that
    describe the file (duration, size)."""
    name, fields = amf0.decode(frame.payload)[:2]
    if not isinstance(fields, dict):
        return frame
    kept = amf0.ECMAArray({k: v for k, v in fields.items() if k not in FILE_ONLY_METADATA})
    return Frame(frame.kind, frame.codec, frame.pts, frame.dts, amf0.encode(name, kept), config=True)


def demo_frames() -> list[Frame]:
    """The frames of the shipped demo clip, in file order (metadata and configs first), with
    live metadata (see :func:`live_metadata`)."""
    data = resources.files("arcly_trio.server").joinpath("assets/demo.flv").read_bytes()
    return [live_metadata(frame) if frame.is_metadata else frame for frame in flv.read_frames(data)]


_CATCH_UP = 32
"""Frames already due that the demo sends in one go (then it lets the others run)."""


async def publish_demo(
    engine: Engine,
    key: StreamKey | str = "live/demo",
    *,
    loops: float = float("inf"),
    token: str | None = None,
) -> None:
    """Publish the demo clip to ``key`` in real time, looping, until cancelled or stopped.

    Frames already due (the loop was busy) go out together, up to ``_CATCH_UP`` per turn: one
    per turn, the demo fell behind real time whenever a turn of the loop took longer than a
    frame (its viewers got 3-8 fps while 100 publishers kept the loop busy).

    ``token`` is presented to the engine's authenticator like a publisher's ``?token=``.
    """
    key = StreamKey.parse(key) if isinstance(key, str) else key
    frames = demo_frames()
    head = [f for f in frames if f.config]
    body = [f for f in frames if not f.config]
    credentials = Credentials(token=token, peer=None, protocol="demo")
    try:
        async with engine.publish(key, credentials, protocol="demo") as pub:
            for frame in head:
                await pub.send(frame)
            start = trio.current_time()
            loop = 0
            behind = 0
            while loop < loops:
                offset = loop * LOOP_MS
                for frame in body:
                    due = start + (frame.dts + offset) / 1000
                    if due > trio.current_time():
                        behind = 0
                        await trio.sleep_until(due)
                    elif (behind := behind + 1) % _CATCH_UP == 0:
                        await trio.lowlevel.checkpoint()
                    await pub.send(frame.shifted(offset) if offset else frame)
                loop += 1
    except PublishEnded as exc:
        log.info("demo stream stopped: %s", exc)
    except StreamError as exc:
        log.error("demo stream could not publish to %s: %s", key, exc)
