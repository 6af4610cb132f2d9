"""Where a new publish session begins in the frames a stream service receives."""

from __future__ import annotations

from ..core.frame import Frame, FrameKind
from ..kernel.qos import StreamInfo
from ..kernel.stream import Stream

__all__ = ["SessionTracker"]


class SessionTracker:
    """Tells a stream service which frame starts a new publish session.

    The kernel gives a stream a new :class:`~arcly_trio.kernel.qos.StreamInfo` object when a
    publisher takes over or comes back within the reconnect grace, at the moment it attaches.
    Frames of the old session may still be queued for the service then, so the boundary is the
    first frame, once the info has changed, that a fresh publisher starts with: a config or
    metadata frame (publishers send those first), or a timestamp that goes back on its track.
    A new session that sends neither is not split off (its frames stay in the same recording or
    on the same HLS timeline, which is still valid).
    """

    __slots__ = ("info", "_next", "_last")

    def __init__(self, stream: Stream) -> None:
        self.info: StreamInfo = stream.info
        """The info of the session the frames currently belong to."""
        self._next: StreamInfo | None = None
        self._last: dict[FrameKind, int] = {}

    def starts_session(self, stream: Stream, frame: Frame) -> bool:
        """Whether ``frame`` (the stream's next frame) is the first of a new session."""
        info = stream.info
        if info is not self.info:
            self._next = info
        new = False
        if self._next is not None:
            last = self._last.get(frame.kind)
            if frame.config or (last is not None and frame.dts < last):
                self.info = self._next
                self._next = None
                self._last.clear()
                new = True
        self._last[frame.kind] = frame.dts
        return new
