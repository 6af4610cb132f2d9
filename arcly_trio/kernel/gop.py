"""The GOP cache: what a late joiner needs to start playing at once, track by track.

It keeps the latest config of every (kind, track) and the latest metadata apart from each other
(a bridged config, :attr:`~arcly_trio.core.frame.Frame.bridged`, apart from the original's),
and the frames of the current GOP. A GOP starts at a keyframe of the *primary* video track (the
lowest video track id of the session, 0 unless a publisher sends only other tracks); it holds
the frames of every track from there on. Nothing is cached before the first such keyframe. When
the current GOP grows past the frame or byte cap it is dropped whole and nothing is cached until
the next primary keyframe: the cache is never trimmed from the front, so a replay never starts
mid-GOP.

Other video tracks (Enhanced RTMP multitrack) need their own keyframe: a replay leaves out a
secondary track's frames before that track's first keyframe in the GOP, and reports the video
tracks it holds a keyframe of, so the joiner's delivery waits for the others live.

Every frame is pushed with its stream sequence number, so a replay can be put in publish order
and a lagging subscriber can be given exactly the configs it missed.

Error policy: nothing raises; this is plain bookkeeping (no clock, no trio).
"""

from __future__ import annotations

from arcly_trio.core.frame import Frame, FrameKind

__all__ = ["GopCache", "Replay"]

_VIDEO = FrameKind.VIDEO
_DATA = FrameKind.DATA

Slot = tuple[FrameKind, int, bool]


class Replay:
    """What a joiner gets first: ``frames``; whether they start on the primary keyframe
    (``on_keyframe``); and the video tracks they hold a keyframe of (``synced_tracks``)."""

    __slots__ = ("frames", "on_keyframe", "synced_tracks")

    def __init__(self, frames: list[Frame], on_keyframe: bool, synced_tracks: frozenset[int]) -> None:
        self.frames = frames
        self.on_keyframe = on_keyframe
        self.synced_tracks = synced_tracks


class GopCache:
    """Configs, metadata and the current GOP of one stream (see the module docstring)."""

    __slots__ = ("max_frames", "max_bytes", "primary", "video_tracks", "_configs", "_prefix", "_gop", "_gop_bytes")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.primary: int | None = None
        """The primary video track of the session (``None`` before any video frame)."""
        self.video_tracks: set[int] = set()
        """Every video track the session has sent."""
        self._configs: dict[Slot, tuple[int, Frame]] = {}
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

    def note_video_track(self, track: int) -> None:
        """A video frame (not a config) of ``track`` was seen (the lowest such track is the
        primary one)."""
        if track not in self.video_tracks:
            self.video_tracks.add(track)
            if self.primary is None or track < self.primary:
                self.primary = track

    def is_sync(self, frame: Frame) -> bool:
        """Whether ``frame`` is where a subscriber may start or resume: a keyframe of the
        primary video track (any audio frame on a stream without video)."""
        if self.primary is None:
            return frame.kind is FrameKind.AUDIO and not frame.config
        return frame.keyframe and frame.kind is _VIDEO and not frame.config and frame.track == self.primary

    def push(self, seq: int, frame: Frame) -> None:
        """Take in the stream's next frame."""
        if frame.kind is _VIDEO and not frame.config and frame.track not in self.video_tracks:
            self.note_video_track(frame.track)
        if frame.config:
            self._configs[(frame.kind, frame.track, frame.bridged)] = (seq, frame)
            if self._gop:
                self._append(frame)
            return
        if frame.kind is _VIDEO and frame.keyframe and frame.track == self.primary:
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
        """The latest metadata and configs (every track), in the order they were published."""
        return sorted(self._configs.values(), key=lambda entry: entry[0])

    def replay(self) -> Replay:
        """What a joiner gets first (see :class:`Replay`).

        With a GOP cached: the configs as they were at its keyframe, then the GOP (mid-GOP config
        changes in place; a secondary video track's frames from its first keyframe on). Without:
        the latest configs only, not on a keyframe: the joiner waits for the next one.
        """
        if not self._gop:
            return Replay([frame for _, frame in self.configs()], False, frozenset())
        synced = {self.primary}
        frames = [frame for _, frame in self._prefix]
        for frame in self._gop:
            if frame.kind is _VIDEO and not frame.config and frame.track not in synced:
                if not frame.keyframe:
                    continue  # a secondary track's frames before its first keyframe in the GOP
                synced.add(frame.track)
            frames.append(frame)
        return Replay(frames, True, frozenset(t for t in synced if t is not None))

    def configs_since(self, seq: int) -> list[tuple[int, Frame]]:
        """The configs published at or after ``seq`` that are still current, in publish order.

        Given to a lagging subscriber right before the keyframe it resumes on.
        """
        return [entry for entry in self.configs() if entry[0] >= seq]

    def clear(self) -> None:
        """Forget everything (a new publish session starts from scratch)."""
        self.primary = None
        self.video_tracks = set()
        self._configs = {}
        self._prefix = []
        self._gop = []
        self._gop_bytes = 0
