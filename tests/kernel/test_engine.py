"""The engine's public setters (what a reload changes without reaching into the engine)."""

from __future__ import annotations

import pytest

from arcly_trio import Credentials, Engine, PublisherLimitReached


async def test_set_max_publishers_applies_to_the_next_publisher() -> None:
    engine = Engine.builder().max_publishers(1).application("live").build()
    async with engine:
        release = engine.claim_publisher(Credentials())
        with pytest.raises(PublisherLimitReached):
            engine.claim_publisher(Credentials())
        engine.set_max_publishers(2)
        assert engine.max_publisher_count == 2
        engine.claim_publisher(Credentials())()
        release()
    with pytest.raises(ValueError):
        engine.set_max_publishers(-1)
