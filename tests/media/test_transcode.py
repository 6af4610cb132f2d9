"""The AAC <-> Opus transcoders, with real audio: a 440 Hz sine encoded by PyAV itself, pushed
through the transcoder, and the output decoded again by PyAV (energy, rate, duration, timestamps
in sync with the input's); bad input only counted."""

from __future__ import annotations

import array
import fractions
import math

import av
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs.aac import parse_audio_specific_config
from arcly_trio.media.codecs.opus import parse_opus_head
from arcly_trio.media.transcode import MAX_INPUT_BYTES, AacToOpus, OpusToAac, Transcoder


def _sine(samples: int, rate: int, offset: int) -> array.array[float]:
    return array.array("f", [0.5 * math.sin(2 * math.pi * 440 * (i + offset) / rate) for i in range(samples)])


def encoded_sine(codec: str, rate: int, channels: int, seconds: float, start_ms: int) -> list[Frame]:
    """``seconds`` of a sine as kernel frames (config first), timestamps from ``start_ms``."""
    encoder = av.CodecContext.create("aac" if codec == "aac" else "libopus", "w")
    encoder.sample_rate = rate
    encoder.layout = "stereo" if channels == 2 else "mono"
    encoder.format = "fltp" if codec == "aac" else "flt"
    encoder.bit_rate = 96000
    encoder.time_base = fractions.Fraction(1, rate)
    encoder.open()
    size = encoder.frame_size
    packets = []
    for i in range(int(rate * seconds) // size):
        frame = av.AudioFrame(format=encoder.format.name, layout=encoder.layout.name, samples=size)
        frame.sample_rate = rate
        frame.pts = i * size
        mono = _sine(size, rate, i * size)
        if codec == "aac":
            for plane in frame.planes:
                plane.update(mono.tobytes())
        else:
            frame.planes[0].update(array.array("f", [v for v in mono for _ in range(channels)]).tobytes())
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    frames = [Frame(FrameKind.AUDIO, codec, start_ms, start_ms, bytes(encoder.extradata), config=True)]
    first = packets[0].pts
    for packet in packets:
        ms = start_ms + round((packet.pts - first) * 1000 / rate)
        frames.append(Frame(FrameKind.AUDIO, codec, ms, ms, bytes(packet)))
    return frames


def run(transcoder: Transcoder, frames: list[Frame]) -> list[Frame]:
    out: list[Frame] = []
    for frame in frames:
        out += transcoder.push(frame)
    return out + transcoder.flush()


def decode(frames: list[Frame]) -> tuple[int, int, float, int]:
    """(sample rate, samples, RMS, channels) of the decoded output."""
    config, media = frames[0], frames[1:]
    decoder = av.CodecContext.create("aac" if config.codec == "aac" else "libopus", "r")
    decoder.extradata = config.payload
    decoder.open()
    resampler = av.AudioResampler(format="flt", layout="mono")
    samples, energy, rate, channels = 0, 0.0, 0, 0
    for frame in media:
        for pcm in decoder.decode(av.Packet(frame.payload)):
            rate, channels = pcm.sample_rate, len(pcm.layout.channels)
            for mono in resampler.resample(pcm):
                values = array.array("f", bytes(mono.planes[0])[: mono.samples * 4])
                samples += len(values)
                energy += sum(v * v for v in values)
    return rate, samples, math.sqrt(energy / max(samples, 1)), channels


def duration_ms(frames: list[Frame], last_ms: float) -> float:
    media = [f for f in frames if not f.config]
    return media[-1].pts + last_ms - media[0].pts


def check_timestamps(source: list[Frame], out: list[Frame], frame_ms: float) -> None:
    media = [f for f in out if not f.config]
    assert out[0].config and media[0].pts == source[1].pts  # the first pts is the input's first
    pts = [f.pts for f in media]
    # pts from sample counts: the n-th frame at first + round(n * frame duration), no drift.
    assert pts == [pts[0] + round(n * frame_ms) for n in range(len(pts))]
    assert all(f.dts == f.pts for f in media)
    in_ms = duration_ms(source, 1024 * 1000 / 48000)
    assert abs(duration_ms(out, frame_ms) - in_ms) <= frame_ms + 30  # one frame + codec delay


def test_aac_to_opus_stereo_44100() -> None:
    source = encoded_sine("aac", 44100, 2, 2.0, 1000)
    transcoder = AacToOpus()
    out = run(transcoder, source)
    head = parse_opus_head(out[0].payload)
    assert out[0].codec == "opus" and head.channels == 2 and head.input_sample_rate == 48000
    assert [f.config for f in out].count(True) == 1
    check_timestamps(source, out, 20.0)
    rate, samples, rms, channels = decode(out)
    assert rate == 48000 and channels == 2 and rms > 0.1
    assert abs(samples / 48 - 2000) < 60
    assert transcoder.skipped == 0 and transcoder.frames_in == len(source) and transcoder.frames_out == len(out)


def test_aac_mono_48000_stays_mono() -> None:
    source = encoded_sine("aac", 48000, 1, 1.0, 0)
    out = run(AacToOpus(), source)
    assert parse_opus_head(out[0].payload).channels == 1
    rate, _, rms, channels = decode(out)
    assert (rate, channels) == (48000, 1) and rms > 0.1


def test_opus_to_aac() -> None:
    source = encoded_sine("opus", 48000, 2, 2.0, 500)
    transcoder = OpusToAac()
    out = run(transcoder, source)
    config = parse_audio_specific_config(out[0].payload)
    assert (config.object_type, config.sample_rate, config.channels) == (2, 48000, 2)
    check_timestamps(source, out, 1024 * 1000 / 48000)
    rate, samples, rms, _ = decode(out)
    assert rate == 48000 and rms > 0.1 and abs(samples / 48 - 2000) < 80


def test_opus_without_head_is_decoded_as_stereo() -> None:
    source = encoded_sine("opus", 48000, 2, 0.5, 0)[1:]
    out = run(OpusToAac(), source)
    assert out[0].config and decode(out)[2] > 0.1


def test_a_jump_in_the_input_moves_the_anchor() -> None:
    source = encoded_sine("aac", 48000, 2, 2.0, 0)
    half = len(source) // 2
    jumped = source[:half] + [f.shifted(10_000) for f in source[half:]]
    out = [f for f in run(AacToOpus(), jumped) if not f.config]
    pts = [f.pts for f in out]
    assert pts == sorted(pts)
    assert abs(pts[-1] - jumped[-1].pts) <= 60  # the end keeps the input's timeline
    assert any(b - a > 5000 for a, b in zip(pts, pts[1:], strict=False))


def test_same_config_again_is_ignored_new_config_reconfigures() -> None:
    aac = encoded_sine("aac", 48000, 2, 0.5, 0)
    mono = encoded_sine("aac", 44100, 1, 0.5, 600)
    transcoder = AacToOpus()
    out = run(transcoder, [*aac[:5], aac[0], *aac[5:]])
    assert [f.config for f in out].count(True) == 1
    out = run(transcoder, mono)
    assert out[0].config and parse_opus_head(out[0].payload).channels == 1
    assert out[1].pts == 600


def test_other_kinds_and_codecs_are_ignored() -> None:
    transcoder = AacToOpus()
    assert transcoder.push(Frame(FrameKind.VIDEO, "h264", 0, 0, b"\0\0\0\1e")) == []
    assert transcoder.push(Frame(FrameKind.AUDIO, "mp3", 0, 0, b"\xff\xfb")) == []
    assert transcoder.frames_in == 0 and transcoder.skipped == 0 and transcoder.flush() == []


def test_aac_before_its_config_and_oversized_frames_are_skipped() -> None:
    transcoder = AacToOpus()
    assert transcoder.push(Frame(FrameKind.AUDIO, "aac", 0, 0, b"\x21\x10\x04")) == []
    assert transcoder.skipped == 1
    transcoder.push(encoded_sine("aac", 48000, 2, 0.1, 0)[0])
    assert transcoder.push(Frame(FrameKind.AUDIO, "aac", 0, 0, bytes(MAX_INPUT_BYTES + 1))) == []
    assert transcoder.skipped == 2
    assert transcoder.push(Frame(FrameKind.AUDIO, "aac", 0, 0, b"\x00\x01", config=True)) == []
    assert transcoder.skipped == 3


_AAC = encoded_sine("aac", 48000, 2, 0.3, 0)
_OPUS = encoded_sine("opus", 48000, 2, 0.3, 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.booleans(), st.binary(max_size=300), st.integers(-(2**31), 2**31)), max_size=12),
    st.booleans(),
)
def test_garbage_is_skipped_never_raised(items: list[tuple[bool, bytes, int]], opus: bool) -> None:
    transcoder: Transcoder = OpusToAac() if opus else AacToOpus()
    codec, good = ("opus", _OPUS) if opus else ("aac", _AAC)
    frames = list(good[:4])
    for config, payload, pts in items:
        frames.append(Frame(FrameKind.AUDIO, codec, pts, pts, payload, config=config))
    frames += good[4:8]
    out = run(transcoder, frames)
    assert all(f.codec == ("aac" if opus else "opus") for f in out)
    assert transcoder.frames_in == len(frames)
