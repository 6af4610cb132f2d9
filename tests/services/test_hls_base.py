"""services/_hls_base.py: the packagings run against any PackagingHost; the HLS service is one."""

from __future__ import annotations

from typing import Any

from arcly_trio import StreamKey
from arcly_trio.kernel.engine import RunsWithEngine
from arcly_trio.kernel.health import HealthReporter
from arcly_trio.services import HlsService
from arcly_trio.services._hls_base import Packaging, PackagingHost
from arcly_trio.services._hls_cmaf import CmafPackaging
from arcly_trio.services._hls_held import HeldBytes
from arcly_trio.services._hls_ts import TsPackaging
from arcly_trio.workers.http.api_routes import StreamUrls
from arcly_trio.workers.http.server import RouteInstaller

KEY = StreamKey("live", "s")


class FakeHost:
    target_duration = 2.0
    part_duration = 0.5
    window = 4
    max_segment_bytes = 1 << 20
    part_delete_delay = 6.0

    def __init__(self) -> None:
        self.live: dict[str, Any] = {}
        self.stored: dict[str, bytes] = {}
        self.changes = 0

    async def store(self, key: str, data: bytes, held: HeldBytes | None = None) -> None:
        self.stored[key] = data

    def expire(self, key: str, delay: float | None = None, held: HeldBytes | None = None) -> None:
        self.stored.pop(key, None)

    def lists_changed(self) -> None:
        self.changes += 1


def members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(getattr(protocol, "__annotations__", {}))


def test_the_hls_service_is_a_packaging_host() -> None:
    service = HlsService()
    missing = {name for name in members(PackagingHost) if not hasattr(service, name)}
    assert not missing


async def test_a_cmaf_packaging_lives_in_its_host_until_it_ends() -> None:
    host = FakeHost()
    packaging: Packaging = CmafPackaging(host, KEY, "t", low_latency=True)
    assert host.live["live/s"] is packaging.live  # type: ignore[attr-defined]
    await packaging.ended()
    assert "live/s" not in host.live


async def test_a_ts_packaging_runs_against_a_plain_host() -> None:
    host = FakeHost()
    packaging: Packaging = TsPackaging(host, KEY, "t")
    await packaging.apply(packaging.finish())
    assert packaging.lists <= {"index.m3u8"} and packaging.stream is None


def test_the_plugin_hooks_are_declared_protocols() -> None:
    service = HlsService()
    for hook in (RouteInstaller, StreamUrls, RunsWithEngine):
        assert isinstance(service, hook), hook
    assert not isinstance(object(), HealthReporter)
