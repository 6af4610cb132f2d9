"""Builders of synthetic frames and GOPs, for tests and benchmarks.

Payloads are small and distinct (they name the frame), so a failing assertion shows which frame
went where. The builders make structurally valid streams for the kernel (configs first, a
keyframe at the start of every GOP); the bytes are not decodable media. :func:`real_stream` is
decodable: the frames of the H.264+AAC demo clip shipped with the package, looped.
"""

from __future__ import annotations

from collections.abc import Iterator

from arcly_trio.core.frame import Frame, FrameKind

__all__ = [
    "video_config",
    "audio_config",
    "metadata",
    "keyframe",
    "delta",
    "audio",
    "synthetic_gop",
    "synthetic_stream",
    "real_stream",
]


def video_config(ts: int = 0, codec: str = "h264", payload: bytes = b"avcC") -> Frame:
    return Frame(FrameKind.VIDEO, codec, ts, ts, payload, keyframe=True, config=True)


def audio_config(ts: int = 0, codec: str = "aac", payload: bytes = b"\x12\x10") -> Frame:
    return Frame(FrameKind.AUDIO, codec, ts, ts, payload, config=True)


def metadata(ts: int = 0, payload: bytes = b"onMetaData") -> Frame:
    return Frame(FrameKind.DATA, "amf0", ts, ts, payload, config=True)


def keyframe(ts: int, size: int = 64, codec: str = "h264", cts: int = 0) -> Frame:
    return Frame(FrameKind.VIDEO, codec, ts + cts, ts, _payload(b"K", ts, size), keyframe=True)


def delta(ts: int, size: int = 16, codec: str = "h264", cts: int = 0) -> Frame:
    return Frame(FrameKind.VIDEO, codec, ts + cts, ts, _payload(b"P", ts, size))


def audio(ts: int, size: int = 8, codec: str = "aac") -> Frame:
    return Frame(FrameKind.AUDIO, codec, ts, ts, _payload(b"A", ts, size))


def _payload(tag: bytes, ts: int, size: int) -> bytes:
    head = tag + str(ts).encode()
    return head + bytes(max(0, size - len(head)))


def synthetic_gop(
    start_ms: float,
    frames: int = 60,
    fps: float = 30.0,
    audio_fps: float = 46.875,
    key_size: int = 64,
    delta_size: int = 16,
    audio_size: int = 8,
) -> list[Frame]:
    """One GOP: a keyframe and ``frames - 1`` deltas, with audio interleaved in dts order."""
    out: list[tuple[float, int, Frame]] = []
    for i in range(frames):
        ts = start_ms + i * 1000.0 / fps
        frame = keyframe(int(ts), key_size) if i == 0 else delta(int(ts), delta_size)
        out.append((ts, 0, frame))
    if audio_fps:
        duration = frames * 1000.0 / fps
        t = 0.0
        while t < duration:
            ts = start_ms + t
            out.append((ts, 1, audio(int(ts), audio_size)))
            t += 1000.0 / audio_fps
    out.sort(key=lambda item: (item[0], item[1]))
    return [frame for _, _, frame in out]


def synthetic_stream(
    gops: int, frames_per_gop: int = 60, fps: float = 30.0, audio_fps: float = 46.875, **sizes: int
) -> Iterator[Frame]:
    """Metadata, video and audio configs, then ``gops`` GOPs (the 30 fps + 47 fps pattern)."""
    yield metadata()
    yield video_config()
    if audio_fps:
        yield audio_config()
    gop_ms = frames_per_gop * 1000.0 / fps
    for g in range(gops):
        yield from synthetic_gop(g * gop_ms, frames_per_gop, fps, audio_fps, **sizes)


def real_stream(start_ms: int = 0) -> Iterator[Frame]:
    """The demo clip's frames (640x360 H.264 at 30 fps and AAC, a keyframe every 2 s): its
    metadata and configs, then its media looped forever, each loop shifted by the clip's length,
    from ``start_ms`` on. Every frame is a new object (identity checks work across loops); the
    payloads are real, so HLS, recording and decoders can use them."""
    from arcly_trio.server.demo import LOOP_MS, demo_frames

    frames = demo_frames()
    for frame in frames:
        if frame.config:
            yield Frame(frame.kind, frame.codec, start_ms, start_ms, frame.payload, frame.keyframe, True, frame.track)
    media = [frame for frame in frames if not frame.config]
    loop = 0
    while True:
        offset = start_ms + loop * LOOP_MS
        for frame in media:
            yield Frame(
                frame.kind,
                frame.codec,
                frame.pts + offset,
                frame.dts + offset,
                frame.payload,
                frame.keyframe,
                False,
                frame.track,
            )
        loop += 1
