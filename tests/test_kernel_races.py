"""Stateful property test: random interleavings of publish, unpublish, crash, cancel, takeover,
subscribe, unsubscribe, slow subscribers and time passing, across apps and keys."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from arcly_trio import AppSpec, Engine, Takeover, TokenAuthenticator
from arcly_trio.testing import CountingObserver
from arcly_trio.testing.races import EngineRaces, run_races


class _SlowTokenAuth(TokenAuthenticator):
    """Token auth with checkpoints inside, so cancellation can land during authorisation."""

    async def authorize_publish(self, key, credentials):  # type: ignore[no-untyped-def]
        await trio.sleep(0)
        if credentials.token == "bad":
            self._check("good", key, credentials, "publish")

    async def authorize_play(self, key, credentials):  # type: ignore[no-untyped-def]
        await trio.sleep(0)


def _engine(observer: CountingObserver) -> Engine:
    return (
        Engine.builder()
        .max_publishers(3)
        .idle_timeout(10)
        .application(AppSpec("rej", gop_cache_frames=6))
        .application(AppSpec("rep", takeover=Takeover.REPLACE, reconnect_grace=5, lag_budget=6))
        .application(AppSpec("big", gop_cache_frames=0, subscriber_queue=2))
        .authenticator(_SlowTokenAuth())
        .observer(observer)
        .build()
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_interleavings_keep_the_engine_consistent(data: st.DataObject) -> None:
    observer = CountingObserver()
    clock = trio.testing.MockClock()

    async def main() -> None:
        await run_races(EngineRaces, _engine(observer), data, clock, max_steps=40)

    trio.run(main, clock=clock)
    for hook, count in observer.counts.items():
        if count:
            event(hook)
    # Every publish that started also ended, exactly once.
    assert observer.counts["on_publish_started"] == observer.counts["on_publish_ended"]
    assert observer.counts["on_subscriber_joined"] == observer.counts["on_subscriber_left"]
