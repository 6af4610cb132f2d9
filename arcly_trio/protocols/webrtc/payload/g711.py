"""G.711 over RTP (RFC 3551 section 4.5.14, payload types 0 PCMU and 8 PCMA): the audio of IP cameras.

What it is for: most IP cameras send their microphone as 8 kHz mono G.711 (A-law, ``PCMA``, or
mu-law, ``PCMU``); the RTSP camera pull (:mod:`arcly_trio.relay.rtsp_pull`) takes it through
this depacketizer and turns it into AAC (:class:`~arcly_trio.media.transcode.G711ToAac`).

How it works: G.711 has no payload header and no frames: every byte is one sample, the RTP
timestamp counts samples (8000 a second, one per byte), and a payload is a run of samples of
any length (20 ms, 160 bytes, is usual). :func:`packetize` cuts samples into payloads of at
most ``mtu`` bytes; :class:`Depacketizer` gives each payload back as an
:class:`~arcly_trio.protocols.webrtc.payload.AccessUnit` (always a keyframe: every sample
decodes alone). :data:`CODECS` maps the SDP encoding names to the kernel's codec names.

Attacker's view: nothing is held between payloads; a payload is at most one datagram or one
interleaved frame (64 KiB), which is eight seconds of audio at most: the transcoder refuses
frames over its own bound (:data:`~arcly_trio.media.transcode.MAX_FRAME_SECONDS`).

Error policy: :meth:`Depacketizer.push` never raises: an empty payload is discarded and
counted. :func:`packetize` raises :class:`G711PacketizeError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`) for no samples or an ``mtu`` under one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.protocols.webrtc.payload import AccessUnit

__all__ = ["CODECS", "CLOCK_RATE", "STATIC_PAYLOAD_TYPES", "G711PacketizeError", "packetize", "Depacketizer"]

#: SDP encoding name (upper case) -> the kernel's codec name.
CODECS: Final = {"PCMA": "pcma", "PCMU": "pcmu"}
#: The static payload types of RFC 3551 (an SDP may name them without an ``a=rtpmap``).
STATIC_PAYLOAD_TYPES: Final = {0: "pcmu", 8: "pcma"}
#: Samples (bytes) a second.
CLOCK_RATE: Final = 8000


class G711PacketizeError(LocalProtocolError):
    """Samples that cannot be cut into RTP payloads (none, or an MTU under one byte)."""


def packetize(payload: bytes, mtu: int, *, prefix: Sequence[bytes] = ()) -> list[bytes]:
    """The RTP payloads of a run of G.711 samples, each at most ``mtu`` bytes (``prefix`` is
    ignored: G.711 needs no parameters)."""
    if not payload or mtu < 1:
        raise G711PacketizeError(f"cannot cut {len(payload)} G.711 samples into payloads of {mtu} bytes")
    return [bytes(payload[start : start + mtu]) for start in range(0, len(payload), mtu)]


class Depacketizer:
    """G.711 RTP payloads in, one :class:`AccessUnit` per payload out."""

    def __init__(self) -> None:
        self.needs_keyframe = False
        self.discarded = 0

    def push(self, payload: bytes, *, marker: bool, timestamp: int, lost: bool = False) -> list[AccessUnit]:
        if not payload:
            self.discarded += 1
            return []
        return [AccessUnit(timestamp=timestamp, payload=bytes(payload), keyframe=True)]
