"""Helpers for the RTP payload format tests: the clips made by ffmpeg 8 (read from IVF and Annex B
files), and pushing one access unit's payloads into a depacketizer."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

from arcly_trio.protocols.webrtc.payload import AccessUnit

DATA = Path(__file__).parent / "protocols" / "data"


def ivf_frames(name: str) -> list[bytes]:
    """The frames of an IVF file under ``tests/protocols/data``."""
    data = (DATA / name).read_bytes()
    pos = struct.unpack_from("<H", data, 6)[0]
    frames = []
    while pos < len(data):
        size = struct.unpack_from("<I", data, pos)[0]
        frames.append(data[pos + 12 : pos + 12 + size])
        pos += 12 + size
    return frames


def hevc_access_units(name: str) -> list[list[bytes]]:
    """The access units (NAL unit lists, each starting at an access unit delimiter) of an
    Annex B HEVC file under ``tests/protocols/data``."""
    nals = [nal.rstrip(b"\x00") for nal in re.split(b"\x00\x00\x01", (DATA / name).read_bytes())]
    units: list[list[bytes]] = []
    for nal in filter(None, nals):
        if (nal[0] >> 1) & 0x3F == 35 or not units:
            units.append([])
        units[-1].append(nal)
    return units


def hvcc(nals: list[bytes]) -> bytes:
    """NAL units after 4-byte lengths."""
    return b"".join(len(nal).to_bytes(4, "big") + nal for nal in nals)


def push_all(depacketizer: Any, packets: list[bytes], timestamp: int, *, lost_first: bool = False) -> list[AccessUnit]:
    """Push one access unit's payloads, the marker on the last."""
    out: list[AccessUnit] = []
    for index, packet in enumerate(packets):
        lost = lost_first and index == 0
        out += depacketizer.push(packet, marker=index == len(packets) - 1, timestamp=timestamp, lost=lost)
    return out
