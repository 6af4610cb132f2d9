"""The bookkeeping every video depacketizer shares: one access unit at a time, loss, keyframes.

The H.265, VP8, VP9 and AV1 depacketizers differ only in how a payload is read and how an
access unit is finished; :class:`Assembly` does the rest the same way for each, as the
:class:`~arcly_trio.protocols.webrtc.payload.Depacketizer` protocol asks:

* payloads with one RTP timestamp make one access unit; the marker bit ends it (so does a new
  timestamp, for a sender that forgot the marker);
* ``lost=True`` abandons the access unit being built; the access unit of the payload that came
  with it is skipped too, unless the codec can tell that payload starts one (VP8 ``S``, VP9
  ``B``...), since its beginning may be what was lost; then output waits for a keyframe;
* a payload the codec cannot read abandons its access unit the same way;
* the decoder configuration record is handed out with the first access unit delivered after
  it appears or changes (never with one that was dropped).

A codec subclass implements :meth:`Assembly._add` (read one payload into its state, raise a
:class:`~arcly_trio.core.errors.RemoteProtocolError` if it cannot), :meth:`Assembly._build`
(the finished access unit as ``(payload, keyframe, config)``, or ``None`` if incomplete),
:meth:`Assembly._reset` (forget the access unit) and, optionally, :meth:`Assembly._may_start`.

Attacker's view: an access unit is held only up to :data:`MAX_ACCESS_UNIT` bytes of payload
(more abandons it), so a peer that never sets the marker costs bounded memory; nothing is kept
across access units but the last configuration record delivered.

Error policy: :meth:`Assembly.push` never raises for anything a peer sends: it catches the
codec's :class:`~arcly_trio.core.errors.RemoteProtocolError`, counts the payloads it drops in
``discarded`` and sets ``needs_keyframe``. Any other exception is a bug and propagates.
"""

from __future__ import annotations

from typing import Final

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.protocols.webrtc.payload import AccessUnit

__all__ = ["MAX_ACCESS_UNIT", "Assembly", "TooLarge"]

#: The most payload bytes one access unit may gather (a 4K keyframe is about 1 MB).
MAX_ACCESS_UNIT: Final = 8 << 20


class TooLarge(RemoteProtocolError):
    """An access unit larger than :data:`MAX_ACCESS_UNIT`."""


class Assembly:
    """The shared part of a video depacketizer (see the module docstring)."""

    def __init__(self) -> None:
        self.needs_keyframe = True
        self.discarded = 0
        self._timestamp: int | None = None
        self._packets = 0
        self._size = 0
        self._skip: int | None = None
        self._config: bytes | None = None

    # The codec's part.
    def _add(self, payload: bytes) -> None:
        raise NotImplementedError

    def _build(self) -> tuple[bytes, bool, bytes | None] | None:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _may_start(self, payload: bytes) -> bool:
        """Whether ``payload`` surely starts an access unit (so a loss before it lost nothing
        of its access unit)."""
        return False

    # The shared part.
    def push(self, payload: bytes, *, marker: bool, timestamp: int, lost: bool = False) -> list[AccessUnit]:
        """One RTP payload in sequence order (see
        :class:`~arcly_trio.protocols.webrtc.payload.Depacketizer`)."""
        out: list[AccessUnit] = []
        if lost:
            self._abandon()
            self._skip = None if self._may_start(payload) else timestamp
        if self._skip is not None:
            if timestamp == self._skip:
                self.discarded += 1
                return out
            self._skip = None
        if self._packets and timestamp != self._timestamp:
            out.extend(self._complete())
        self._timestamp = timestamp
        self._packets += 1
        self._size += len(payload)
        try:
            if self._size > MAX_ACCESS_UNIT:
                raise TooLarge(f"access unit larger than {MAX_ACCESS_UNIT} bytes")
            self._add(payload)
        except RemoteProtocolError:
            self._abandon()
            self._skip = timestamp
            return out
        if marker:
            out.extend(self._complete())
        return out

    def _abandon(self) -> None:
        """Drop the access unit being built and wait for a keyframe."""
        self.discarded += self._packets
        self._packets = 0
        self._size = 0
        self._reset()
        self.needs_keyframe = True

    def _complete(self) -> list[AccessUnit]:
        timestamp = self._timestamp if self._timestamp is not None else 0
        try:
            built = self._build()
        except RemoteProtocolError:
            built = None
        if built is None:
            self._abandon()
            return []
        payload, keyframe, config = built
        packets = self._packets
        self._packets = 0
        self._size = 0
        self._reset()
        if self.needs_keyframe and not keyframe:
            self.discarded += packets
            return []
        self.needs_keyframe = False
        fresh = config if config is not None and config != self._config else None
        if fresh is not None:
            self._config = fresh
        return [AccessUnit(timestamp=timestamp, payload=payload, keyframe=keyframe, config=fresh)]
