"""The GOP cache: what a late joiner needs to start playing at once.

It keeps, apart from each other, the latest video config, the latest audio config and the latest
metadata, and the frames of the current GOP from its keyframe on. Nothing is cached before the
first keyframe. A keyframe starts a new GOP. When the current GOP grows past the frame or byte
cap, it is dropped whole and nothing is cached until the next keyframe: the cache is never
trimmed from the front, so a replay never starts mid-GOP.

Every frame is pushed with its stream sequence number, so a replay can be put in publish order
and a lagging subscriber can be given exactly the configs it missed.
"""

from __future__ import annotations

from ..core.frame import Frame, FrameKind

__all__ = ["GopCache"]

_SLOT = {FrameKind.VIDEO: 0, FrameKind.AUDIO: 1, FrameKind.DATA: 2}


class GopCache:
    """Configs, metadata and the current GOP of one stream (sans-IO, no clock)."""

    __slots__ = ("max_frames", "max_bytes", "_configs", "_prefix", "_gop", "_gop_bytes")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        # (seq, frame) per slot: video config, audio config, metadata.
        self._configs: list[tuple[int, Frame] | None] = [None, None, None]
        # The configs as they were when the current GOP's keyframe arrived, in publish order.
        self._prefix: list[tuple[int, Frame]] = []
        self._gop: list[Frame] = []
        self._gop_bytes = 0

    @property
    def gop_frames(self) -> int:
        return len(self._gop)

    @property
    def gop_bytes(self) -> int:
        return self._gop_bytes

    def push(self, seq: int, frame: Frame) -> None:
        """Take in the stream's next frame."""
        if frame.config:
            self._configs[_SLOT[frame.kind]] = (seq, frame)
            if self._gop:
                self._append(frame)
            return
        if frame.keyframe and frame.kind is FrameKind.VIDEO:
            self._gop = []
            self._gop_bytes = 0
            if self.max_frames:
                self._prefix = self.configs()
                self._append(frame)
            return
        if self._gop:
            self._append(frame)

    def _append(self, frame: Frame) -> None:
        gop = self._gop
        gop.append(frame)
        self._gop_bytes += len(frame.payload)
        if len(gop) > self.max_frames or (self.max_bytes and self._gop_bytes > self.max_bytes):
            self._gop = []
            self._gop_bytes = 0

    def configs(self) -> list[tuple[int, Frame]]:
        """The latest metadata and configs, in the order they were published."""
        present = [entry for entry in self._configs if entry is not None]
        present.sort(key=lambda entry: entry[0])
        return present

    def replay(self) -> tuple[list[Frame], bool]:
        """What a joiner gets first, and whether it starts on a keyframe.

        With a GOP cached: the configs as they were at its keyframe, then the GOP (mid-GOP config
        changes included in place). Without: the latest configs only, and ``False``: the joiner
        must wait for the next keyframe.
        """
        if self._gop:
            return [frame for _, frame in self._prefix] + self._gop, True
        return [frame for _, frame in self.configs()], False

    def configs_since(self, seq: int) -> list[tuple[int, Frame]]:
        """Configs published at or after ``seq`` that are current at the latest keyframe.

        Given to a lagging subscriber right before the keyframe it resumes on.
        """
        return [entry for entry in self.configs() if entry[0] >= seq]

    def clear(self) -> None:
        """Forget everything (a new publish session starts from scratch)."""
        self._configs = [None, None, None]
        self._prefix = []
        self._gop = []
        self._gop_bytes = 0
