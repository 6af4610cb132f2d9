"""Opus over RTP (arcly_trio.protocols.webrtc.payload.opus, RFC 7587): one packet per payload
both ways, every access unit a keyframe without config, loss needs no recovery, garbage never
raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.protocols.webrtc.payload import AccessUnit
from arcly_trio.protocols.webrtc.payload.opus import Depacketizer, OpusPacketizeError, packetize

# RFC 6716 3.1: TOC byte 0xfc is config 31 (CELT FB 20 ms), stereo, code 0 (one frame).
FRAME = bytes.fromhex("fcff fe") + bytes(60)


def test_one_frame_is_one_payload_and_comes_back_as_a_keyframe() -> None:
    assert packetize(FRAME, 1200, prefix=(b"ignored",)) == [FRAME]
    d = Depacketizer()
    assert d.push(FRAME, marker=False, timestamp=960) == [AccessUnit(960, FRAME, True, None)]
    assert not d.needs_keyframe


def test_loss_needs_no_recovery_and_empty_payloads_are_counted() -> None:
    d = Depacketizer()
    assert d.push(b"", marker=False, timestamp=0) == [] and d.discarded == 1
    assert d.push(FRAME, marker=False, timestamp=1920, lost=True) == [AccessUnit(1920, FRAME, True)]
    assert not d.needs_keyframe


def test_packetize_refuses_what_does_not_fit() -> None:
    with pytest.raises(OpusPacketizeError):
        packetize(FRAME, 10)
    with pytest.raises(LocalProtocolError):
        packetize(b"", 1200)


@given(st.binary(min_size=1, max_size=1500), st.integers(0, 0xFFFFFFFF))
def test_any_packet_round_trips(frame: bytes, timestamp: int) -> None:
    (payload,) = packetize(frame, 1500)
    assert Depacketizer().push(payload, marker=True, timestamp=timestamp) == [AccessUnit(timestamp, frame, True)]


@given(st.lists(st.tuples(st.binary(max_size=100), st.booleans(), st.integers(0, 9), st.booleans()), max_size=20))
def test_garbage_never_raises_from_push(pushes: list[tuple[bytes, bool, int, bool]]) -> None:
    d = Depacketizer()
    for payload, marker, timestamp, lost in pushes:
        d.push(payload, marker=marker, timestamp=timestamp, lost=lost)
    assert d.discarded == sum(1 for payload, *_ in pushes if not payload)
