"""kernel/subscription.py: a subscription has its Subscriber record from its constructor, and
the stream ends it through the public ``detach``."""

from __future__ import annotations

from arcly_trio import Credentials, EndReason, StreamKey
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.testing import keyframe


class FakeStream:
    key = StreamKey("live", "s")

    def __init__(self) -> None:
        self.unsubscribed: list[Subscription] = []

    def unsubscribe(self, sub: Subscription) -> None:
        self.unsubscribed.append(sub)


def test_the_record_exists_from_the_start() -> None:
    stream = FakeStream()
    sub = Subscription(stream, 8, 7, Credentials(protocol="rtmp"), "rtmp")
    assert sub.subscriber.id == sub.id == 7
    assert sub.key == stream.key and sub.protocol == "rtmp" and sub.stream is stream
    assert sub.subscriber.sink is sub and sub.dropped == 0 and sub.end_reason is None


def test_detach_lets_go_of_the_frames_and_takes_no_more() -> None:
    sub = Subscription(FakeStream(), 8, 1, Credentials(), "")
    assert sub.offer([keyframe(0)], 0) == 1 and sub.queued == 1
    sub.detach()
    assert sub.queued == 0
    assert sub.offer([keyframe(40), keyframe(80)], 0) == 2  # taken and forgotten
    assert sub.queued == 0


async def test_unsubscribing_through_the_engine_detaches(engine) -> None:  # type: ignore[no-untyped-def]
    async with engine.publish("live/s") as publisher:
        await publisher.send(keyframe(0))
        async with engine.subscribe("live/s") as sub:
            assert sub.subscriber in engine.stream("live/s").fanout.subscribers
        assert sub.end_reason is EndReason.UNSUBSCRIBED and sub.queued == 0
