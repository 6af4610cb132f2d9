"""RFC 3640 AAC-hbr payloads: one frame per packet, fragments, several frames per packet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.payload.aac import AacPacketizeError, Depacketizer, packetize
from tests._rtp_payloads import push_all


def test_a_frame_round_trips_whole_and_fragmented() -> None:
    frame = bytes(range(256)) * 3
    (packet,) = packetize(frame, 1200)
    assert packet[:4] == b"\x00\x10" + (len(frame) << 3).to_bytes(2, "big")
    depacketizer = Depacketizer()
    (unit,) = depacketizer.push(packet, marker=True, timestamp=1000)
    assert (unit.payload, unit.timestamp, unit.keyframe) == (frame, 1000, True)
    packets = packetize(frame, 100)
    assert len(packets) == 8
    (unit,) = push_all(depacketizer, packets, 2024)
    assert unit.payload == frame and depacketizer.discarded == 0


def test_several_frames_in_one_payload_get_consecutive_timestamps() -> None:
    frames = [b"a" * 10, b"b" * 20, b"c" * 5]
    headers = b"".join((len(f) << 3).to_bytes(2, "big") for f in frames)
    payload = (16 * len(frames)).to_bytes(2, "big") + headers + b"".join(frames)
    units = Depacketizer().push(payload, marker=True, timestamp=0xFFFFFC00)
    assert [u.payload for u in units] == frames
    assert [u.timestamp for u in units] == [0xFFFFFC00, 0, 1024]


def test_a_lost_fragment_drops_the_frame_and_the_next_one_decodes() -> None:
    frame = bytes(300)
    first, second, _third = packetize(frame, 110)
    depacketizer = Depacketizer()
    assert depacketizer.push(first, marker=False, timestamp=0) == []
    assert depacketizer.push(second, marker=True, timestamp=0) == []  # short of the announced size
    (unit,) = depacketizer.push(packetize(b"x" * 9, 1200)[0], marker=True, timestamp=1024, lost=True)
    assert unit.payload == b"x" * 9
    assert depacketizer.discarded >= 1


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x0f\x00\x08x", b"\x00\x10", b"\x04\x00" + bytes(10)])
def test_malformed_payloads_are_counted(payload: bytes) -> None:
    depacketizer = Depacketizer()
    assert depacketizer.push(payload, marker=True, timestamp=0) == []
    assert depacketizer.discarded == 1


def test_packetize_refuses_what_it_cannot_carry() -> None:
    for frame, mtu in ((b"", 1200), (bytes(8192), 1200), (b"x", 4)):
        with pytest.raises(AacPacketizeError):
            packetize(frame, mtu)


@given(st.binary(max_size=200), st.booleans(), st.booleans())
def test_arbitrary_payloads_never_raise(payload: bytes, marker: bool, lost: bool) -> None:
    depacketizer = Depacketizer()
    depacketizer.push(payload, marker=marker, timestamp=5, lost=lost)
    depacketizer.push(payload, marker=True, timestamp=5)
