"""Opus packet framing (arcly_trio.media.codecs.opus_packet, RFC 6716 3.2): every code read,
build/read round trips, join keeps the frames in order, garbage raises only CodecError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.media.codecs import opus_packet
from arcly_trio.media.codecs.errors import CodecError

CELT_FB_20MS_STEREO = 0xFC  # config 31 (CELT fullband 20 ms), stereo, code 0
SILK_NB_60MS = 3 << 3  # config 3: SILK narrowband 60 ms


def test_every_code_is_read() -> None:
    assert opus_packet.frames_of(bytes((0xFC,)) + b"abc") == (0xFC, [b"abc"])
    assert opus_packet.frames_of(bytes((0xFD,)) + b"abcd") == (0xFC, [b"ab", b"cd"])
    assert opus_packet.frames_of(bytes((0xFE, 1)) + b"abcd") == (0xFC, [b"a", b"bcd"])
    # code 3, CBR, 3 frames, padding of 254 + 2 bytes (a 255 length byte then a 2)
    padded = bytes((0xFF, 0x40 | 3, 255, 2)) + b"aabbcc" + bytes(256)
    assert opus_packet.frames_of(padded) == (0xFC, [b"aa", b"bb", b"cc"])
    # code 3, VBR, 3 frames: the first two lengths written (one of 300 bytes: two bytes)
    vbr = bytes((0xFF, 0x80 | 3, 252, 12, 1)) + bytes(300) + b"b" + b"cc"
    assert opus_packet.frames_of(vbr) == (0xFC, [bytes(300), b"b", b"cc"])
    assert opus_packet.duration(vbr) == 3 * 960


@pytest.mark.parametrize(
    "packet",
    [
        b"",  # R1: at least one byte
        bytes((0xFD,)) + b"abc",  # code 1 with an odd payload
        bytes((0xFE, 10)) + b"abc",  # code 2 whose first frame overruns
        bytes((0xFE, 253)),  # code 2 ending inside a two-byte length
        bytes((0xFF,)),  # code 3 without its count
        bytes((0xFF, 0)),  # code 3 of no frame
        bytes((SILK_NB_60MS | 3, 3)) + bytes(3),  # code 3 of 180 ms
        bytes((0xFF, 3)) + b"abcd",  # CBR: 4 bytes are not 3 equal frames
        bytes((0xFF, 0x40 | 1, 200)) + b"a",  # padding longer than the packet
        bytes((0xFC,)) + bytes(1276),  # a frame over 1275 bytes
    ],
)
def test_malformed_packets_raise_codec_error(packet: bytes) -> None:
    with pytest.raises(CodecError):
        opus_packet.frames_of(packet)


def test_join_makes_one_40ms_packet_of_two_20ms_ones_and_refuses_what_cannot_be_one() -> None:
    first, second = bytes((0xFC,)) + b"x" * 160, bytes((0xFC,)) + b"y" * 150
    joined = opus_packet.join((first, second))
    assert joined is not None and joined[0] == 0xFE  # code 2: two frames of different sizes
    assert opus_packet.frames_of(joined) == (0xFC, [b"x" * 160, b"y" * 150])
    assert opus_packet.duration(joined) == 1920
    assert opus_packet.join((first, bytes((0xF8,)) + b"m")) is None  # mono after stereo: not one packet
    sixty = bytes((SILK_NB_60MS,)) + b"s"
    assert opus_packet.join((sixty, sixty)) == bytes((SILK_NB_60MS | 1,)) + b"ss"  # 120 ms: the most
    assert opus_packet.join((sixty, sixty, sixty)) is None
    with pytest.raises(LocalProtocolError):
        opus_packet.build(SILK_NB_60MS, [b"s"] * 3)


tocs = st.integers(0, 31).map(lambda config: config << 3) | st.sampled_from([CELT_FB_20MS_STEREO, 0xF8, 0x7C])


@st.composite
def frame_lists(draw: st.DrawFn) -> tuple[int, list[bytes]]:
    toc = draw(tocs)
    most = opus_packet.MAX_SAMPLES // opus_packet.frame_samples(toc)
    sizes = st.integers(0, 1275) if draw(st.booleans()) else st.integers(0, 300)
    equal = draw(st.booleans())
    count = draw(st.integers(1, min(most, 6)))
    if equal:
        size = draw(sizes)
        return toc, [draw(st.binary(min_size=size, max_size=size)) for _ in range(count)]
    return toc, [draw(st.binary(min_size=draw(sizes), max_size=1275).map(lambda b: b[:1275])) for _ in range(count)]


@given(frame_lists())
def test_build_then_read_gives_the_frames_back(case: tuple[int, list[bytes]]) -> None:
    toc, frames = case
    packet = opus_packet.build(toc, frames)
    assert opus_packet.frames_of(packet) == (toc & 0xFC, frames)
    assert opus_packet.duration(packet) == len(frames) * opus_packet.frame_samples(toc)


@given(frame_lists(), st.integers(1, 5))
def test_join_is_the_concatenation_of_the_frames(case: tuple[int, list[bytes]], cut: int) -> None:
    toc, frames = case
    cut = min(cut, len(frames))
    parts = [opus_packet.build(toc, frames[:cut])]
    if frames[cut:]:
        parts.append(opus_packet.build(toc, frames[cut:]))
    joined = opus_packet.join(parts)
    assert joined is not None
    assert opus_packet.frames_of(joined) == (toc & 0xFC, frames)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_codec_error_and_frames_fit_the_packet(packet: bytes) -> None:
    try:
        toc, frames = opus_packet.frames_of(packet)
    except CodecError:
        return
    assert toc == packet[0] & 0xFC
    assert sum(map(len, frames)) < len(packet)
    assert all(len(frame) <= opus_packet.MAX_FRAME for frame in frames)
    assert len(frames) * opus_packet.frame_samples(toc) <= opus_packet.MAX_SAMPLES
    rebuilt = opus_packet.build(toc, frames)  # what was read can always be written again
    assert opus_packet.frames_of(rebuilt) == (toc, frames)
