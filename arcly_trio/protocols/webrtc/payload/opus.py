"""Opus over RTP (RFC 7587): one Opus packet per RTP payload, both ways.

The Opus payload format of the WebRTC core (issue 22), following the package interface
(:mod:`arcly_trio.protocols.webrtc.payload`). RFC 7587 section 4.2 puts exactly one Opus packet
(one to six frames, 2.5 to 120 ms, as the encoder made it) in each RTP payload, with no payload
header, and the RTP timestamp counts 48 kHz samples whatever the coded bandwidth.

* :func:`packetize` returns the frame as the one payload (``prefix`` is ignored: Opus needs no
  parameters in-band; the ``OpusHead`` travels in SDP's ``opus/48000/2``).
* :class:`Depacketizer` returns each payload as an :class:`AccessUnit`: always a keyframe, no
  ``config`` (the caller builds an ``OpusHead`` with
  :func:`~arcly_trio.media.codecs.opus.opus_head` once per stream).

Attacker's view: nothing is held between payloads; a payload is at most one datagram.

Error policy: :meth:`Depacketizer.push` never raises for what a peer sends: an empty payload
is discarded and counted (a loss needs no recovery: every Opus packet decodes alone).
:func:`packetize` raises :class:`OpusPacketizeError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`) for an empty frame or one over ``mtu``.
"""

from __future__ import annotations

from collections.abc import Sequence

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.protocols.webrtc.payload import AccessUnit

__all__ = ["OpusPacketizeError", "packetize", "Depacketizer"]


class OpusPacketizeError(LocalProtocolError):
    """An Opus frame that cannot be one RTP payload (empty, or larger than the MTU)."""


def packetize(payload: bytes, mtu: int, *, prefix: Sequence[bytes] = ()) -> list[bytes]:
    """The one RTP payload of an Opus packet (see the module docstring)."""
    if not payload or len(payload) > mtu:
        raise OpusPacketizeError(f"an Opus packet of {len(payload)} bytes does not fit an RTP payload of {mtu}")
    return [bytes(payload)]


class Depacketizer:
    """Opus RTP payloads in, one :class:`AccessUnit` per payload out."""

    def __init__(self) -> None:
        self.needs_keyframe = False
        self.discarded = 0

    def push(self, payload: bytes, *, marker: bool, timestamp: int, lost: bool = False) -> list[AccessUnit]:
        if not payload:
            self.discarded += 1
            return []
        return [AccessUnit(timestamp=timestamp, payload=bytes(payload), keyframe=True)]
