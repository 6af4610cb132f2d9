"""Shared fixtures: engines on port 0, the autojump clock, and a log of what was emitted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from arcly_trio import AppSpec, Engine
from arcly_trio.testing import CountingObserver


@pytest.fixture
def observer() -> CountingObserver:
    return CountingObserver()


@pytest.fixture
async def engine(observer: CountingObserver) -> AsyncIterator[Engine]:
    """A running engine with one default application ``live`` and an idle timeout of 30 s."""
    async with Engine.builder().application(AppSpec("live")).idle_timeout(30).observer(observer).build() as eng:
        yield eng
