"""The GOP cache and the lag policy (``kernel/gop.py``) per track.

Mutation checklist: the GOP cache and lag policy ignoring ``Frame.track`` fails
``test_a_late_joiner_of_two_tracks_gets_each_tracks_config_and_keyframe``.
"""

from __future__ import annotations

import trio
import trio.testing

from arcly_trio import (
    AppSpec,
    Engine,
    Frame,
    FrameKind,
)


def two_track_gop(start: int) -> list[Frame]:
    """Track 0 and track 1 video, their keyframes at different places."""
    out: list[Frame] = []
    for i in range(6):
        ts = start + 33 * i
        out.append(Frame(FrameKind.VIDEO, "h264", ts, ts, b"t0-%d" % ts, keyframe=i == 0, track=0))
        out.append(Frame(FrameKind.VIDEO, "h264", ts, ts, b"t1-%d" % ts, keyframe=i == 3, track=1))
    return out


async def test_a_late_joiner_of_two_tracks_gets_each_tracks_config_and_keyframe(engine: Engine) -> None:
    config0 = Frame(FrameKind.VIDEO, "h264", 0, 0, b"avcC-0", keyframe=True, config=True, track=0)
    config1 = Frame(FrameKind.VIDEO, "h264", 0, 0, b"avcC-1", keyframe=True, config=True, track=1)
    async with engine.publish("live/multi") as publisher:
        for frame in [config0, config1, *two_track_gop(0)]:
            await publisher.send(frame)
        await trio.testing.wait_all_tasks_blocked()
        async with engine.subscribe("live/multi") as sub:
            got = await sub.next_batch(100)  # the join-time frames
            await publisher.send(Frame(FrameKind.VIDEO, "h264", 200, 200, b"t1-200", track=1))
            await trio.testing.wait_all_tasks_blocked()
            got += await sub.next_batch(100)
    assert got[:2] == [config0, config1]
    media = [f for f in got if not f.config]
    first0 = next(f for f in media if f.track == 0)
    first1 = next(f for f in media if f.track == 1)
    assert first0.keyframe and first0.dts == 0
    assert first1.keyframe and first1.dts == 99  # track 1's deltas before its keyframe are left out
    assert [f.dts for f in media if f.track == 1] == [99, 132, 165, 200]


async def test_a_lagging_subscriber_resumes_each_track_on_its_own_keyframe() -> None:
    async with Engine.builder().application(AppSpec("live", subscriber_queue=4)).build() as engine:
        async with engine.publish("live/multi") as publisher:
            await publisher.send(Frame(FrameKind.VIDEO, "h264", 0, 0, b"c0", keyframe=True, config=True))
            await publisher.send(Frame(FrameKind.VIDEO, "h264", 0, 0, b"c1", keyframe=True, config=True, track=1))
            async with engine.subscribe("live/multi", capacity=2) as sub:
                for frame in two_track_gop(0) + two_track_gop(1000):  # overflows a queue of 2
                    await publisher.send(frame)
                await trio.testing.wait_all_tasks_blocked()
                got: list[Frame] = []
                while sub.queued:
                    got += await sub.next_batch(100)
                for frame in two_track_gop(2000):
                    await publisher.send(frame)
                    await trio.testing.wait_all_tasks_blocked()
                    got += await sub.next_batch(100) if sub.queued else []
    assert sub.dropped > 0
    # After every gap, each track starts again on one of its own keyframes.
    for track in (0, 1):
        frames = [f for f in got if f.track == track and not f.config]
        assert frames[0].keyframe
        published = [f for g in (0, 1000, 2000) for f in two_track_gop(g) if f.track == track]
        positions = [next(i for i, p in enumerate(published) if p.payload == f.payload) for f in frames]
        for before, after, frame in zip(positions, positions[1:], frames[1:]):
            if after != before + 1:
                assert frame.keyframe, (track, frame)
