"""The invariant checkers of the race machines (:class:`~.races.EngineRaces`, and
:class:`~.server_races.ServerRaces` over real connections): what one subscriber or player
received, held against what its stream delivered.

* :func:`check_delivery` — order, decodability and exact drops for an in-process subscriber;
* :func:`check_decodable` — order and decodability alone (also for a player over a protocol,
  whose frames are matched by their bytes);
* :func:`check_sessions` — the session announcements a subscriber read its frames under.

The invariants themselves are described in :mod:`arcly_trio.testing.races`. Error policy: a
violated invariant raises ``AssertionError`` with what was wrong (for the exact drops, the whole
delivered sequence marked got/missed); the checkers raise nothing else and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.kernel.fanout import EndReason
from arcly_trio.kernel.subscription import Subscription

__all__ = ["check_sessions", "check_delivery", "check_decodable"]

_VIDEO = FrameKind.VIDEO
_AUDIO = FrameKind.AUDIO


def check_sessions(received: Sequence[Frame], sessions: Sequence[int], session_of: dict[int, int]) -> None:
    """The session-announcement invariant for one subscriber (:mod:`~.races`'s docstring): ``sessions``
    holds the announced number each frame of ``received`` was read under."""
    serial_of: dict[int, int] = {}  # announced number -> the publish session's serial
    last = 0
    for frame, number in zip(received, sessions, strict=False):
        serial = session_of.get(id(frame), 0)
        assert number > 0, f"a frame of {frame.kind.name} {frame.dts} was read before any session was announced"
        assert number >= last, f"session announcements went back from {last} to {number}"
        last = number
        assert serial_of.setdefault(number, serial) == serial, (
            f"frames of two publish sessions were read under announcement {number}"
        )
    assert len(set(serial_of.values())) == len(serial_of), ("one publish session announced twice", serial_of)


def check_delivery(
    received: list[Frame], delivered: list[Frame], sub: Subscription, session_of: dict[int, int], *, exact: bool
) -> None:
    """The order, decodability and exact-drop invariants for one subscriber (:mod:`~.races`'s docstring).

    ``delivered`` is everything its stream delivered, in sequence order (index ``i`` is
    sequence number ``i + 1``); ``exact`` when the subscriber has read all it was given.
    """
    record = sub.subscriber
    end = (record.left_seq - 1) if record.left_seq is not None else len(delivered)
    positions = check_decodable(received, delivered, session_of, end=end)
    got = set(positions)
    joined = record.joined_seq - 1  # index of the first live frame offered

    def session(i: int) -> int:
        return session_of.get(id(delivered[i]), 0)

    if not exact:
        return
    _check_exact_drops(delivered, positions, got, record, joined, end, session, session_of)


def check_decodable(
    received: Sequence[Frame],
    delivered: list[Frame],
    session_of: dict[int, int],
    *,
    end: int | None = None,
    same: Callable[[Frame], Any] = id,
) -> list[int]:
    """Order and decodability of what a player received (:mod:`~.races`'s docstring); the positions of
    the received frames in ``delivered``. ``same`` says how a received frame is matched with a
    delivered one (identity in-process; the bytes of its FLV body over a protocol)."""
    end = len(delivered) if end is None else end
    index = {same(frame): i for i, frame in enumerate(delivered)}
    positions = []
    for frame in received:
        assert same(frame) in index, f"a player got a frame its stream never delivered: {frame}"
        positions.append(index[same(frame)])
    assert all(a < b for a, b in zip(positions, positions[1:], strict=False)), "out of order or duplicated"
    got = set(positions)

    def session(i: int) -> int:
        return session_of.get(id(delivered[i]), 0)

    # Configs current for the session came first, and every video track (re)starts on a keyframe.
    for i, frame in enumerate(delivered[:end]):
        if not frame.config and frame.kind is not FrameKind.DATA and i in got:
            needed = _config_before(delivered, i, session(i), frame.kind, frame.track, session_of)
            if needed is not None:
                assert needed in got and needed < i, f"received {frame} without its config {delivered[needed]}"
    last_of_track: dict[tuple[int, int], int] = {}
    for i in positions:
        frame = delivered[i]
        if frame.kind is not _VIDEO or frame.config:
            continue
        slot = (session(i), frame.track)
        previous = last_of_track.get(slot)
        gap = previous is None or any(
            delivered[j].kind is _VIDEO
            and not delivered[j].config
            and delivered[j].track == frame.track
            and session(j) == slot[0]
            for j in range(previous + 1, i)
        )
        assert not gap or frame.keyframe, f"video track {frame.track} resumed on a non-keyframe {frame}"
        last_of_track[slot] = i
    return positions


def _check_exact_drops(
    delivered: list[Frame],
    positions: list[int],
    got: set[int],
    record: Any,
    joined: int,
    end: int,
    session: Callable[[int], int],
    session_of: dict[int, int],
) -> None:
    # Exact drops: every live frame offered and not received counts, except while starting
    # and for a video track of which no keyframe had been offered or replayed since the start.
    counted = 0
    replayed_keys = {
        delivered[i].track
        for i in positions
        if i < joined and delivered[i].keyframe and delivered[i].kind is _VIDEO and not delivered[i].config
    }
    started = record.join_state == "live"
    keyed: set[int] = set(replayed_keys) if started else set()
    current = session(joined - 1) if joined > 0 else None  # the session when it joined
    primary = _primary(delivered, current, session_of, upto=joined)
    for i in range(joined, end):
        frame = delivered[i]
        if session(i) != current:
            if i > 0:  # the first frame of a new session on the stream: a fresh start
                started, keyed, primary = False, set(), None
            current = session(i)
        if frame.kind is _VIDEO and not frame.config:
            primary = frame.track if primary is None else min(primary, frame.track)
        if not started:
            if i in got and _is_sync(frame, primary):
                started = True
                keyed = {frame.track} if frame.kind is _VIDEO else set()
            continue
        if frame.kind is _VIDEO and frame.keyframe and not frame.config:
            keyed.add(frame.track)
        if i in got:
            continue
        if frame.kind is _VIDEO and not frame.config and frame.track not in keyed:
            continue
        counted += 1
    if record.dropped != counted:
        lines = [
            f"  {'got ' if i in got else 'MISS' if joined <= i < end else '    '} #{i + 1} session {session(i)} "
            f"{f.kind.value} track {f.track}{' key' if f.keyframe else ''}{' config' if f.config else ''}"
            for i, f in enumerate(delivered)
        ]
        raise AssertionError(
            f"dropped {record.dropped}, but {counted} frames were missed and counted "
            f"(joined at #{joined + 1} {record.join_state}, left at #{end + 1}):\n" + "\n".join(lines)
        )
    if record.end_reason is EndReason.EVICTED:
        assert record.dropped > 0


def _primary(delivered: list[Frame], session: int | None, session_of: dict[int, int], upto: int) -> int | None:
    """The lowest video track (media frames) of ``session`` delivered before index ``upto``."""
    if session is None:
        return None
    tracks = [
        f.track for f in delivered[:upto] if f.kind is _VIDEO and not f.config and session_of.get(id(f), 0) == session
    ]
    return min(tracks) if tracks else None


def _is_sync(frame: Frame, primary: int | None) -> bool:
    if primary is None:
        return frame.kind is _AUDIO and not frame.config
    return frame.kind is _VIDEO and frame.keyframe and not frame.config and frame.track == primary


def _config_before(
    delivered: list[Frame], i: int, session: int, kind: FrameKind, track: int, session_of: dict[int, int]
) -> int | None:
    for j in range(i - 1, -1, -1):
        frame = delivered[j]
        if session_of.get(id(frame), 0) != session:
            return None
        if frame.config and frame.kind is kind and frame.track == track:
            return j
    return None
