"""RTP payload formats: one module per codec, each a packetizer and a depacketizer.

What every codec module (``h264``, ``h265``, ``vp8``, ``vp9``, ``av1``, ``opus``) provides, so the
WebRTC worker drives them all the same way:

* ``packetize(payload, mtu, *, prefix=()) -> list[bytes]``: the RTP payloads of one access unit,
  in order, each at most ``mtu`` bytes (the RTP header and SRTP tag are not counted in ``mtu``).
  ``payload`` follows the kernel's :class:`~arcly_trio.core.frame.Frame` convention for the codec
  (length-prefixed NAL units for H.264/H.265, the OBU stream for AV1, one frame for VP8/VP9,
  one packet for Opus); ``prefix`` is what must precede a keyframe for a receiver that joins
  there (SPS/PPS/VPS NAL units, an AV1 sequence header OBU; ignored where meaningless). The
  caller sets the RTP marker bit on the last payload of a video access unit. Raises
  :class:`~arcly_trio.core.errors.LocalProtocolError` for an access unit the format cannot carry.
* a ``Depacketizer`` class (:class:`Depacketizer` below): RTP payloads in sequence order in,
  :class:`AccessUnit` out.

The codec modules import nothing from trio and do no I/O.

Error policy: a depacketizer never raises for bad or missing input from a peer: it drops what
it cannot use, counts it (``discarded``), and waits for the next keyframe (``needs_keyframe``),
so one lost or malformed packet costs a picture, not the session.
"""

from __future__ import annotations

from typing import Protocol

import attrs

__all__ = ["AccessUnit", "Depacketizer"]


@attrs.frozen(slots=True)
class AccessUnit:
    """One access unit put back together from RTP payloads.

    Attributes:
        timestamp: its RTP timestamp (the caller unwraps it and converts to milliseconds).
        payload: the codec bytes in the kernel's :class:`~arcly_trio.core.frame.Frame`
            convention for the codec (see the module docstring).
        keyframe: a random access point (IDR, IRAP, key frame, Opus: always ``True``).
        config: the decoder configuration record (``avcC``, ``hvcC``, ``av1C``, ``vpcC``) when
            it first appears or changes with this access unit, else ``None``.
    """

    timestamp: int
    payload: bytes
    keyframe: bool
    config: bytes | None = None


class Depacketizer(Protocol):
    """Puts one RTP stream's payloads back into access units (see the module docstring).

    ``push`` takes the payloads of one SSRC in sequence order; ``lost=True`` says packets are
    missing right before this one (the caller's reorder buffer gave up on them): the access unit
    being assembled is discarded and nothing more is returned before the next keyframe.
    """

    needs_keyframe: bool
    """Whether output is held until a keyframe (at start, after loss or bad input): the caller
    asks the sender for one (RTCP PLI)."""
    discarded: int
    """Payloads dropped (malformed, or part of an access unit that could not be completed)."""

    def push(self, payload: bytes, *, marker: bool, timestamp: int, lost: bool = False) -> list[AccessUnit]: ...
