"""Opus packets (RFC 6716, section 3): read the frames of a packet, join packets into one, sans-IO.

A WHEP viewer's Opus packets are half of its datagrams (one every 20 ms, each a whole system
call); two consecutive 20 ms packets joined into one 40 ms packet halve them. RFC 6716's
framing allows it without touching the coded frames (what libopus's ``opus_repacketizer``
does): every frame of a packet shares its TOC byte's configuration (mode, bandwidth, frame
size) and channel flag, and the packet's code says how many frames follow and how their
lengths are written (section 3.2):

* :func:`frames_of` returns a packet's TOC configuration (its top six bits: ``config`` and
  ``s``) and its frames, following the rules R1-R7 of section 3.4 (padding of a code 3 packet
  is left out);
* :func:`build` writes frames of one configuration as the shortest packet (code 0, 1, 2 or 3,
  no padding);
* :func:`join` is :func:`build` of the frames of several packets, or ``None`` when they cannot
  be one packet (different configurations, more than 120 ms of audio);
* :func:`duration` is a packet's length in 48 kHz samples.

Error policy: the packets come from a publisher: malformed bytes raise
:class:`~.errors.CodecError` and nothing else escapes on arbitrary bytes. :func:`build` raises
:class:`~arcly_trio.core.errors.LocalProtocolError` for frames that no packet can hold (the
caller's bug).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.media.codecs.errors import CodecError

__all__ = ["MAX_FRAME", "MAX_SAMPLES", "frame_samples", "frames_of", "duration", "build", "join"]

MAX_FRAME: Final = 1275
"""The largest frame a packet may hold (R2, R3)."""
MAX_SAMPLES: Final = 5760
"""A packet holds at most 120 ms of audio: 5760 samples at 48 kHz (R5)."""

_SILK: Final = (480, 960, 1920, 2880)
_HYBRID: Final = (480, 960)
_CELT: Final = (120, 240, 480, 960)


def frame_samples(toc: int) -> int:
    """The samples (at 48 kHz) of each frame of a packet with this TOC byte (table 2)."""
    config = toc >> 3
    if config < 12:
        return _SILK[config & 3]
    if config < 16:
        return _HYBRID[config & 1]
    return _CELT[config & 3]


def _length(packet: bytes, at: int, end: int) -> tuple[int, int]:
    """A frame length of one or two bytes (section 3.2.1) at ``at``: (length, next position)."""
    if at >= end:
        raise CodecError("an Opus packet ends inside a frame length")
    first = packet[at]
    if first < 252:
        return first, at + 1
    if at + 1 >= end:
        raise CodecError("an Opus packet ends inside a frame length")
    return first + 4 * packet[at + 1], at + 2


def frames_of(packet: bytes) -> tuple[int, list[bytes]]:
    """The packet's TOC configuration (``toc & 0xFC``) and its frames (see the module docstring)."""
    size = len(packet)
    if size < 1:
        raise CodecError("an empty Opus packet")
    toc = packet[0]
    code = toc & 3
    if code == 0:
        if size - 1 > MAX_FRAME:
            raise CodecError(f"an Opus frame of {size - 1} bytes")
        return toc & 0xFC, [bytes(packet[1:])]
    if code == 1:
        if (size - 1) % 2 or (size - 1) // 2 > MAX_FRAME:
            raise CodecError(f"a code 1 Opus packet of {size} bytes")
        half = 1 + (size - 1) // 2
        return toc & 0xFC, [bytes(packet[1:half]), bytes(packet[half:])]
    if code == 2:
        first, at = _length(packet, 1, size)
        if first > size - at or size - at - first > MAX_FRAME:
            raise CodecError(f"a code 2 Opus packet of {size} bytes with a first frame of {first}")
        return toc & 0xFC, [bytes(packet[at : at + first]), bytes(packet[at + first :])]
    if size < 2:
        raise CodecError("a code 3 Opus packet without its frame count")
    count_byte = packet[1]
    count = count_byte & 0x3F
    if count == 0 or count * frame_samples(toc) > MAX_SAMPLES:
        raise CodecError(f"a code 3 Opus packet of {count} frames")
    at = 2
    end = size
    if count_byte & 0x40:  # padding: its length, then that many bytes at the end
        while True:
            if at >= size:
                raise CodecError("an Opus packet ends inside its padding length")
            byte = packet[at]
            at += 1
            end -= 254 if byte == 255 else byte
            if byte != 255:
                break
        if end < at:
            raise CodecError("an Opus packet's padding is longer than the packet")
    frames: list[bytes] = []
    if count_byte & 0x80:  # VBR: the lengths of all frames but the last
        lengths = []
        for _ in range(count - 1):
            length, at = _length(packet, at, end)
            lengths.append(length)
        for length in lengths:
            if length > end - at:
                raise CodecError("an Opus frame longer than its packet")
            frames.append(bytes(packet[at : at + length]))
            at += length
        if end - at > MAX_FRAME:
            raise CodecError(f"an Opus frame of {end - at} bytes")
        frames.append(bytes(packet[at:end]))
        return toc & 0xFC, frames
    room = end - at
    if room % count or room // count > MAX_FRAME:
        raise CodecError(f"a CBR Opus packet of {count} frames in {room} bytes")
    each = room // count
    return toc & 0xFC, [bytes(packet[at + index * each : at + (index + 1) * each]) for index in range(count)]


def duration(packet: bytes) -> int:
    """The packet's audio in 48 kHz samples."""
    toc, frames = frames_of(packet)
    return len(frames) * frame_samples(toc)


def _write_length(length: int) -> bytes:
    if length < 252:
        return bytes((length,))
    first = 252 + (length & 3)
    return bytes((first, (length - first) >> 2))


def build(toc: int, frames: Sequence[bytes]) -> bytes:
    """The shortest packet of ``frames`` with the TOC configuration ``toc`` (its code bits are
    ignored): code 0 for one frame, 1 or 2 for two, 3 (CBR or VBR, no padding) for more."""
    config = toc & 0xFC
    count = len(frames)
    if count == 0 or count * frame_samples(config) > MAX_SAMPLES:
        raise LocalProtocolError(f"{count} Opus frames of config {config >> 3} are not one packet")
    if any(len(frame) > MAX_FRAME for frame in frames):
        raise LocalProtocolError("an Opus frame over 1275 bytes")
    if count == 1:
        return bytes((config,)) + frames[0]
    equal = all(len(frame) == len(frames[0]) for frame in frames)
    if count == 2:
        if equal:
            return bytes((config | 1,)) + frames[0] + frames[1]
        return bytes((config | 2,)) + _write_length(len(frames[0])) + frames[0] + frames[1]
    if equal:
        return bytes((config | 3, count)) + b"".join(frames)
    lengths = b"".join(_write_length(len(frame)) for frame in frames[:-1])
    return bytes((config | 3, 0x80 | count)) + lengths + b"".join(frames)


def join(packets: Sequence[bytes]) -> bytes | None:
    """One packet holding the frames of ``packets`` in order, or ``None`` when they cannot be
    one (their TOC configurations differ, or they hold more than 120 ms together)."""
    config = -1
    frames: list[bytes] = []
    for packet in packets:
        toc, more = frames_of(packet)
        if config not in (-1, toc):
            return None
        config = toc
        frames.extend(more)
    if config < 0 or len(frames) * frame_samples(config) > MAX_SAMPLES:
        return None
    return build(config, frames)
