#!/usr/bin/env python3
"""How much the race-machine example of docs/testing.md exercises: seeds x examples of ``run_races``.

    .venv/bin/python scripts/race-machine-coverage.py            # 3 seeds x 500 examples
    .venv/bin/python scripts/race-machine-coverage.py 200 1,2    # 2 seeds x 200

For each seed it prints the share of examples in which a subscriber received a media frame,
that had no subscriber, in which a refused play was raced, and in which two to four
authorizations were in flight at once (the authenticator awaits inside, as one that asks a hook
or a database does), and how the subscribes ended. Examples are generated only (no shrinking,
no example database), so a seed gives the same examples each time.
"""

from __future__ import annotations

import collections
import logging
import sys
from typing import Any

import trio
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from arcly_trio import AppSpec, Credentials, Engine, FrameKind, StreamKey, TokenAuthenticator
from arcly_trio.testing.races import EngineRaces, RaceSetup, run_races


class MyAuthenticator(TokenAuthenticator):
    """docs/testing.md's "yours": tokens, checked after an await; counts authorizations in flight."""

    in_flight = 0
    most = 0

    def __init__(self) -> None:
        super().__init__(publish_token="pub-secret", play_token="view")

    async def _counted(self, check: Any, key: StreamKey, credentials: Credentials) -> Any:
        MyAuthenticator.in_flight += 1
        MyAuthenticator.most = max(MyAuthenticator.most, MyAuthenticator.in_flight)
        try:
            await trio.sleep(0)
            return await check(key, credentials)
        finally:
            MyAuthenticator.in_flight -= 1

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> Any:
        return await self._counted(super().authorize_publish, key, credentials)

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> Any:
        return await self._counted(super().authorize_play, key, credentials)


def my_server() -> RaceSetup:
    """docs/testing.md's example."""
    engine = Engine.builder().application(AppSpec("live", lag_budget=50)).authenticator(MyAuthenticator()).build()
    return RaceSetup(
        engine,
        publish=Credentials(token="pub-secret"),
        play=Credentials(token="view"),
        refused_publish=Credentials(token="wrong"),
        refused_play=Credentials(token="nope"),
    )


def tally(races: EngineRaces, counts: collections.Counter[str]) -> None:
    counts["examples"] += 1
    subscribers = races.subscribers
    counts["no subscriber"] += not subscribers
    counts["plays media"] += any(not f.config and f.kind is not FrameKind.DATA for a in subscribers for f in a.received)
    refused_play = races.setup.refused_play
    counts["races a refused play"] += any(a.credentials == refused_play for a in subscribers)
    counts["2-4 authorizations in flight"] += 2 <= MyAuthenticator.most <= 4
    for actor in subscribers:
        kind = "subscribes with refused_play" if actor.credentials == refused_play else "subscribes"
        counts[kind] += 1
        if actor.state == "refused":
            counts[f"{kind} refused with {type(actor.error).__name__}"] += 1


def main(examples: int, seeds: list[int]) -> None:
    logging.disable(logging.WARNING)
    for number in seeds:
        counts: collections.Counter[str] = collections.Counter()

        @seed(number)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def run(data: st.DataObject) -> None:
            MyAuthenticator.most = 0
            tally(run_races(my_server, data), counts)  # noqa: B023 (run() is called in this iteration)

        run()
        n = counts["examples"]
        shares = ", ".join(
            f"{name} {100 * counts[name] / n:.1f} %"
            for name in ("plays media", "no subscriber", "races a refused play", "2-4 authorizations in flight")
        )
        print(f"seed {number}: {n} examples: {shares}")
        for name in sorted(k for k in counts if k.startswith("subscribes")):
            print(f"    {name}: {counts[name]}")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 500,
        [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1, 2, 3],
    )
