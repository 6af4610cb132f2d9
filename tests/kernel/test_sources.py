"""kernel/sources.py: the sourcing sees the engine only as a SourceHost; claim hooks are a protocol."""

from __future__ import annotations

from collections.abc import Callable

import trio

from arcly_trio import Credentials, StreamKey
from arcly_trio.kernel.sources import PublishClaimer, SourceRequest, Sourcing

KEY = StreamKey("live", "s")


class FakeHost:
    """A SourceHost with no engine behind it: a stream appears once the source 'publishes'."""

    service_names: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.here: set[StreamKey] = set()

    def has_stream(self, key: StreamKey) -> bool:
        return key in self.here


class Bringing:
    name = "fake"

    def __init__(self) -> None:
        self.opened: list[StreamKey] = []

    def provides(self, key: StreamKey) -> bool:
        return True

    async def open_stream(
        self, engine: FakeHost, request: SourceRequest, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.opened.append(request.key)
        engine.here.add(request.key)
        task_status.started()
        await trio.sleep_forever()


class Claiming(Bringing):
    def __init__(self) -> None:
        super().__init__()
        self.released = 0

    async def claim_publish(self, key: StreamKey, credentials: Credentials) -> Callable[[], None]:
        def release() -> None:
            self.released += 1

        return release


async def test_a_source_is_run_for_a_host_that_is_not_an_engine() -> None:
    source = Bringing()
    sourcing = Sourcing([source])
    host = FakeHost()
    async with trio.open_nursery() as nursery:
        await sourcing.obtain(host, KEY, nursery)  # type: ignore[arg-type]
        assert source.opened == [KEY] and host.has_stream(KEY)
        await sourcing.obtain(host, KEY, nursery)  # type: ignore[arg-type]  # single flight
        assert source.opened == [KEY]
        nursery.cancel_scope.cancel()


async def test_only_sources_with_the_claim_hook_claim_publishes() -> None:
    assert not isinstance(Bringing(), PublishClaimer)
    assert isinstance(Claiming(), PublishClaimer)
    assert not Sourcing([Bringing()]).claims_publishes
    claiming = Claiming()
    sourcing = Sourcing([Bringing(), claiming])
    assert sourcing.claims_publishes
    release = await sourcing.claim_publish(KEY, Credentials(protocol="rtmp"))
    release()
    assert claiming.released == 1
