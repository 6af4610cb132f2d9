"""Hypothesis strategies for frames and publishable frame sequences (needs hypothesis)."""

from __future__ import annotations

from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.testing import frames as fb

__all__ = ["frames", "gops", "frame_sequences"]

_VIDEO_CODECS = ("h264", "hevc", "av1", "vp9")
_AUDIO_CODECS = ("aac", "mp3")


@st.composite
def frames(draw: st.DrawFn, kinds: tuple[FrameKind, ...] = tuple(FrameKind)) -> Frame:
    """Any single frame (fields drawn independently; structure not guaranteed)."""
    kind = draw(st.sampled_from(kinds))
    codec = draw(
        st.sampled_from(
            _VIDEO_CODECS if kind is FrameKind.VIDEO else _AUDIO_CODECS if kind is FrameKind.AUDIO else ("amf0",)
        )
    )
    dts = draw(st.integers(0, 2**33))
    cts = draw(st.integers(-500, 500)) if kind is FrameKind.VIDEO else 0
    return Frame(
        kind,
        codec,
        max(0, dts + cts),
        dts,
        draw(st.binary(max_size=64)),
        keyframe=kind is FrameKind.VIDEO and draw(st.booleans()),
        config=draw(st.booleans()),
        track=draw(st.integers(0, 3)),
    )


@st.composite
def gops(draw: st.DrawFn, start_ms: int = 0, max_frames: int = 12, audio: bool = True) -> list[Frame]:
    """A keyframe, some deltas, maybe audio, maybe a mid-GOP config change or a cue point."""
    n = draw(st.integers(1, max_frames))
    out = [fb.keyframe(start_ms)]
    ts = start_ms
    for _ in range(n - 1):
        ts += draw(st.integers(1, 50))
        choice = draw(st.sampled_from(("delta", "delta", "audio" if audio else "delta", "config", "cue")))
        if choice == "delta":
            out.append(fb.delta(ts))
        elif choice == "audio":
            out.append(fb.audio(ts))
        elif choice == "config":
            out.append(fb.video_config(ts, payload=b"avcC" + str(ts).encode()))
        else:
            out.append(Frame(FrameKind.DATA, "amf0", ts, ts, b"onCuePoint"))
    return out


@st.composite
def frame_sequences(draw: st.DrawFn, max_gops: int = 4, max_frames: int = 12) -> list[Frame]:
    """What a well-behaved publisher sends: configs (and metadata), then whole GOPs."""
    with_audio = draw(st.booleans())
    out: list[Frame] = []
    if draw(st.booleans()):
        out.append(fb.metadata())
    out.append(fb.video_config())
    if with_audio:
        out.append(fb.audio_config())
    ts = 0
    for _ in range(draw(st.integers(1, max_gops))):
        gop = draw(gops(start_ms=ts, max_frames=max_frames, audio=with_audio))
        out.extend(gop)
        ts = gop[-1].dts + 33
    return out
