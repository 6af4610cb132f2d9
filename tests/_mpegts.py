"""An independent MPEG-TS reader: packets, PSI sections (PAT, PMT), PES with their timestamps,
continuity checks; written from the specification, not from ``arcly_trio.media.mpegts``.

Error policy: malformed input fails an ``assert`` (it is a test oracle, not a parser).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arcly_trio.media.mpegts import (
    AUDIO_PID,
    VIDEO_PID,
    crc32_mpeg2,
)


@dataclass
class Packet:
    pid: int
    pusi: bool
    has_payload: bool
    cc: int
    rai: bool = False
    discontinuity: bool = False
    pcr: int | None = None
    payload: bytes = b""


@dataclass
class Pes:
    pid: int
    stream_id: int
    length: int
    pts: int
    dts: int
    has_dts: bool
    rai: bool
    pcr: int | None
    data: bytes = b""
    packets: list[Packet] = field(default_factory=list)


def parse_packets(data: bytes) -> list[Packet]:
    assert len(data) % 188 == 0, "not whole packets"
    packets = []
    for pos in range(0, len(data), 188):
        p = data[pos : pos + 188]
        assert p[0] == 0x47, f"bad sync byte at packet {pos // 188}"
        assert not p[1] & 0x80, "transport_error_indicator set"
        pid = ((p[1] & 0x1F) << 8) | p[2]
        control = (p[3] >> 4) & 3
        assert p[3] & 0xC0 == 0, "scrambled"
        assert control != 0, "reserved adaptation_field_control"
        packet = Packet(pid, bool(p[1] & 0x40), bool(control & 1), p[3] & 0x0F)
        body = 4
        if control & 2:
            length = p[4]
            assert length <= (183 if control == 2 else 182)
            if control == 2:
                assert length == 183
            if length:
                flags = p[5]
                packet.discontinuity = bool(flags & 0x80)
                packet.rai = bool(flags & 0x40)
                if flags & 0x10:
                    raw = int.from_bytes(p[6:12], "big")
                    assert (raw >> 9) & 0x3F == 0x3F, "PCR reserved bits"
                    packet.pcr = raw >> 15
                    assert raw & 0x1FF == 0
                stuffing_from = 6 + (6 if flags & 0x10 else 0)
                assert set(p[stuffing_from : 5 + length]) <= {0xFF}, "stuffing must be 0xFF"
            body = 5 + length
        packet.payload = bytes(p[body:]) if control & 1 else b""
        if control & 1:
            assert packet.payload, "a payload-carrying packet with an empty payload"
        packets.append(packet)
    return packets


def read_timestamp(b: bytes, prefix: int) -> int:
    assert b[0] >> 4 == prefix, "PTS/DTS prefix"
    assert b[0] & 1 and b[2] & 1 and b[4] & 1, "marker bits"
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def read_section(packet: Packet) -> bytes:
    assert packet.pusi and packet.payload[0] == 0, "pointer_field 0"
    payload = packet.payload[1:]
    length = ((payload[1] & 0x0F) << 8) | payload[2]
    section = payload[: 3 + length]
    assert crc32_mpeg2(section) == 0, "section CRC"
    assert set(payload[3 + length :]) <= {0xFF}
    return section


def read_pat(section: bytes) -> dict[int, int]:
    assert section[0] == 0x00
    programs = {}
    for pos in range(8, len(section) - 4, 4):
        programs[int.from_bytes(section[pos : pos + 2], "big")] = (
            int.from_bytes(section[pos + 2 : pos + 4], "big") & 0x1FFF
        )
    return programs


def read_pmt(section: bytes) -> tuple[int, dict[int, int]]:
    """(PCR PID, {elementary PID: stream type})."""
    assert section[0] == 0x02
    pcr_pid = int.from_bytes(section[8:10], "big") & 0x1FFF
    info = int.from_bytes(section[10:12], "big") & 0x0FFF
    streams = {}
    pos = 12 + info
    while pos < len(section) - 4:
        stream_type = section[pos]
        pid = int.from_bytes(section[pos + 1 : pos + 3], "big") & 0x1FFF
        es_info = int.from_bytes(section[pos + 3 : pos + 5], "big") & 0x0FFF
        streams[pid] = stream_type
        pos += 5 + es_info
    return pcr_pid, streams


def check_continuity(packets: list[Packet]) -> None:
    last: dict[int, int] = {}
    for packet in packets:
        if not packet.has_payload:
            if packet.pid in last:
                assert packet.cc == last[packet.pid], "CC of a packet without payload"
            continue
        if packet.pid in last:
            assert packet.cc == (last[packet.pid] + 1) % 16, f"CC jump on PID {packet.pid:#x}"
        last[packet.pid] = packet.cc


def collect_pes(packets: list[Packet]) -> list[Pes]:
    """PES packets of the elementary PIDs, in order, with the PCR of their first packet."""
    units: list[Pes] = []
    current: dict[int, Pes] = {}
    for packet in packets:
        if packet.pid not in (VIDEO_PID, AUDIO_PID) or not packet.has_payload:
            continue
        if packet.pusi:
            p = packet.payload
            assert p[:3] == b"\x00\x00\x01"
            flags = p[7]
            header_len = p[8]
            has_dts = flags & 0xC0 == 0xC0
            assert flags & 0x80, "every PES carries a PTS"
            pts = read_timestamp(p[9:14], 0b0011 if has_dts else 0b0010)
            dts = read_timestamp(p[14:19], 0b0001) if has_dts else pts
            pes = Pes(
                packet.pid, p[3], int.from_bytes(p[4:6], "big"), pts, dts, has_dts,
                packet.rai, packet.pcr, p[9 + header_len :], [packet],
            )  # fmt: skip
            current[packet.pid] = pes
            units.append(pes)
        else:
            pes = current[packet.pid]
            pes.data += packet.payload
            pes.packets.append(packet)
    for pes in units:
        if pes.length:
            assert pes.length == 3 + (10 if pes.has_dts else 5) + len(pes.data), "PES length"
    return units


def demux(data: bytes) -> tuple[list[Packet], list[Pes]]:
    packets = parse_packets(data)
    check_continuity(packets)
    return packets, collect_pes(packets)
