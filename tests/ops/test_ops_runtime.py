"""Sessions and kicks, health checks, the audit log, metrics and HTTP hooks, in one process.

Over real loopback sockets (the RTMP and HTTP workers, the standard library's HTTP server as the
hook) but no third-party media tools: the session table lists publishers and players with
their bytes and kicks each kind (a publisher gets ``PublisherKicked``, a player ``KICKED``, over
the API too); the API token guards ``/api/*`` and ``/metrics`` but not ``/api/health``; named
health checks make ``/api/health`` answer ``503`` when a critical one fails, run at most once
per interval, and a check that hangs or raises fails alone; the audit pipeline writes every
decision, start, end and kick, drops (counted) instead of blocking when its sink stalls, and
rotates its file; ``/metrics`` parsed with ``prometheus_client.parser`` matches the engine's
state; HTTP hooks allow, refuse, rename, time out without stalling other clients, fail closed
(or open), cap what they read, cache HLS answers, and ``on_event`` notifications arrive and are
dropped (counted) when the hook cannot keep up.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from arcly_trio import (
    AppSpec,
    Credentials,
    EndReason,
    Engine,
    PublisherKicked,
    PublishRateLimited,
    StreamIdleReaped,
    StreamKey,
    Unauthorized,
)
from arcly_trio.core.frame import Frame
from arcly_trio.kernel.events import AuthDecided
from arcly_trio.kernel.health import CheckResult, HealthRegistry
from arcly_trio.ops import AuditPipeline, EventHook, HttpHooks, JsonLinesFile, MemorySink, PrometheusObserver
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from tests._hooks import blackhole, dead_url, hook_server


@asynccontextmanager
async def served(
    *observers: Any, authenticator: Any = None, api_token: str | None = None, hls: bool = False
) -> AsyncIterator[tuple[Engine, HttpServer]]:
    http = HttpServer("127.0.0.1", 0, api_token=api_token)
    builder = Engine.builder().application(AppSpec("live", hls=hls)).protocol(http)
    if hls:
        builder.service(HlsService(variant="ts", target_duration=1))
    for observer in observers:
        builder.observer(observer)
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine:
        yield engine, http


async def feed(engine: Engine, frames: list[Frame], key: str = "live/cam", **credentials: Any) -> Any:
    """Publish ``frames`` and keep publishing (the caller's block); returns the publisher."""
    publisher = await engine.publish(
        key, Credentials(peer=("198.51.100.9", 5000), protocol="rtmp", **credentials)
    ).__aenter__()
    for frame in frames:
        await publisher.send(frame)
    return publisher


async def test_sessions_list_publishers_and_players_with_bytes_and_kick_each(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    sent = sum(len(f.payload) for f in demo_frames[:60])
    async with served() as (engine, http):
        with pytest.raises(PublisherKicked):
            async with engine.publish("live/cam", Credentials(peer=("198.51.100.9", 5000), protocol="rtmp")) as pub:
                async with engine.subscribe(
                    "live/cam", Credentials(peer=("203.0.113.1", 6000)), protocol="http-flv"
                ) as sub:
                    for frame in demo_frames[:60]:
                        await pub.send(frame)
                    with trio.fail_after(5):
                        while sub.subscriber.bytes < sent:
                            await trio.sleep(0.01)
                    status, _, body = await http_get(http.port, "/api/sessions")
                    document = json.loads(body)
                    assert status == 200 and document["count"] == 2
                    by_role = {s["role"]: s for s in document["sessions"]}
                    assert by_role["publish"]["bytes"] == sent and by_role["play"]["bytes"] == sent
                    assert (by_role["play"]["address"], by_role["play"]["protocol"], by_role["play"]["key"]) == (
                        "203.0.113.1",
                        "http-flv",
                        "live/cam",
                    )
                    kick = f"/api/sessions/{by_role['play']['id']}"
                    status, _, body = await http_get(http.port, kick, method="DELETE")
                    assert status == 200 and json.loads(body)["kicked"]["id"] == by_role["play"]["id"]
                    received = [frame async for frame in sub]  # what was queued, then the end
                    assert sub.end_reason is EndReason.KICKED and len(received) == 60
                    assert (await http_get(http.port, kick, method="DELETE"))[0] == 404
                assert engine.kick(by_role["publish"]["id"]) is not None
                await trio.sleep_forever()  # the kick cancels the publisher's block
        totals = engine.sessions.bytes_by_protocol()
        assert totals[("play", "http-flv")] == sent and totals[("publish", "rtmp")] == sent
        assert engine.sessions.kicked == 2 and len(engine.sessions) == 0


async def test_api_token_guards_the_api_and_metrics_but_not_health(http_get) -> None:  # type: ignore[no-untyped-def]
    async with served(PrometheusObserver(), api_token="k3y") as (engine, http):
        for path in ("/api/streams", "/api/sessions", "/metrics"):
            status, headers, _ = await http_get(http.port, path)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
            assert (await http_get(http.port, path, headers=[("authorization", "Bearer nope")]))[0] == 403
            assert (await http_get(http.port, path, headers=[("authorization", "Bearer k3y")]))[0] == 200
            assert (await http_get(http.port, f"{path}?api_token=k3y"))[0] == 200
        assert (await http_get(http.port, "/api/sessions/1", method="DELETE"))[0] == 401
        assert (await http_get(http.port, "/api/health"))[0] == 200
        assert (await http_get(http.port, "/api/server"))[0] == 200


async def test_health_checks_one_by_one_and_503_when_a_critical_one_fails(http_get, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    async with served() as (engine, http):
        runs = {"flaky": 0}
        state = {"ok": True}

        def flaky() -> CheckResult:
            runs["flaky"] += 1
            return CheckResult(state["ok"], "disk" if state["ok"] else "disk full")

        async def hangs() -> None:
            await trio.sleep_forever()

        def raises() -> None:
            raise OSError("gone")

        engine.health.add("flaky", flaky, interval=5.0)
        engine.health.add("hangs", hangs, critical=False, timeout=0.5)
        engine.health.add("raises", raises, critical=False)
        status, _, body = await http_get(http.port, "/api/health")
        checks = {check["name"]: check for check in json.loads(body)["checks"]}
        assert status == 200 and checks["flaky"]["ok"] and checks["listening:http"]["ok"]
        assert checks["event-loop"]["ok"] and "limit 1000 ms" in checks["event-loop"]["detail"]
        assert not checks["hangs"]["ok"] and "no answer within 0.5 s" in checks["hangs"]["detail"]
        assert checks["raises"]["detail"] == "OSError: gone"
        state["ok"] = False
        await http_get(http.port, "/api/health")
        assert runs["flaky"] == 1  # within its interval: not run again
        await trio.sleep(5)
        status, _, body = await http_get(http.port, "/api/health")
        assert status == 503 and json.loads(body)["status"] == "failing"
        with pytest.raises(ValueError):
            engine.health.add("flaky", flaky)
    assert HealthRegistry.healthy([]) is True


async def test_audit_log_records_decisions_sessions_and_kicks(demo_frames) -> None:  # type: ignore[no-untyped-def]
    sink = MemorySink()
    audit = AuditPipeline(sink)
    from arcly_trio import TokenAuthenticator

    async with served(audit, authenticator=TokenAuthenticator(play_token="v")) as (engine, _):
        async with engine.publish("live/cam", Credentials(peer=("198.51.100.9", 5000))) as pub:
            await pub.send(demo_frames[0])
            with pytest.raises(Unauthorized):
                async with engine.subscribe("live/cam", Credentials(token="x", peer=("203.0.113.5", 1))):
                    pass
            async with engine.subscribe("live/cam", Credentials(token="v", peer=("203.0.113.5", 2))) as sub:
                engine.kick(sub.credentials.client_id)
        audit.record({"event": "config-reload", "ok": True})
        with trio.fail_after(5):
            while len(sink.records) < 9:
                await trio.sleep(0.01)
    events = [(r["event"], r.get("allowed"), r.get("reason")) for r in sink.records]
    assert events == [
        ("auth", True, None),
        ("publish-start", None, None),
        ("auth", False, "wrong token"),
        ("auth", True, None),
        ("play-start", None, None),
        ("kick", None, None),
        ("play-end", None, "kicked"),
        ("publish-end", None, "closed"),
        ("config-reload", None, None),
    ]
    assert sink.records[2]["address"] == "203.0.113.5" and all(r["time"].endswith("Z") for r in sink.records)


async def test_audit_drops_and_counts_when_its_sink_stalls_and_never_blocks(demo_frames) -> None:  # type: ignore[no-untyped-def]
    class Stalled(MemorySink):
        async def write(self, records: list[dict[str, Any]]) -> None:
            await trio.sleep_forever()

    audit = AuditPipeline(Stalled(), capacity=4)
    async with served(audit) as (engine, _):
        with trio.fail_after(5):
            for n in range(20):  # each publish makes records; none of them may wait
                async with engine.publish(f"live/s{n}") as pub:
                    await pub.send(demo_frames[0])
        # 60 records: at most the queue (4) and one batch taken before the sink stalled get in
        assert audit.dropped >= 20 * 3 - 2 * 4 - 1 and audit.written == 0


def refusal(address: str, stream: str = "cam", reason: str = "wrong token", action: str = "play") -> AuthDecided:
    return AuthDecided(
        StreamKey("live", stream), trio.current_time(), action, False, reason, "rtmp", (address, 1000), "7"
    )


async def test_audit_sums_refusals_up_per_address_action_and_interval(autojump_clock) -> None:
    """Issue 18, finding 7 (the rules; test_attacks has the flood over sockets): the first
    refusal of a burst is a record, the rest of each interval one summary; a quiet interval
    ends the burst; allowed decisions are each a record; past ``max_bursts`` the refusals of
    further addresses share one summary per action; open bursts are summed up on shutdown."""
    sink = MemorySink()
    audit = AuditPipeline(sink, refusal_interval=10, max_bursts=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        for second in range(25):  # 25 s of 4 refusals a second from one address
            for n in range(4):
                audit.on_auth_decided(refusal("203.0.113.1", stream=f"s{n}", reason="wrong token" if n else "expired"))
            await trio.sleep(1)
        allowed = AuthDecided(
            StreamKey("live", "cam"), trio.current_time(), "play", True, "", "rtmp", ("203.0.113.1", 1), "8"
        )
        audit.on_auth_decided(allowed)
        audit.on_auth_decided(allowed)
        audit.on_auth_decided(refusal("203.0.113.1", action="publish"))  # another action: its own burst
        for n in range(50):  # more addresses than max_bursts: they share a summary
            audit.on_auth_decided(refusal(f"198.51.100.{n}"))
        await trio.sleep(60)  # quiet: every burst ends
        audit.on_auth_decided(refusal("203.0.113.1"))  # a new burst: a record again
        nursery.cancel_scope.cancel()
    kinds = [(r["event"], r.get("address"), r.get("action"), r.get("refused")) for r in sink.records]
    assert kinds[0] == ("auth", "203.0.113.1", "play", None)
    summaries = [
        r
        for r in sink.records
        if r["event"] == "auth-refusals" and r["address"] == "203.0.113.1" and r["action"] == "play"
    ]
    assert [r["refused"] for r in summaries] == [39, 40, 20]  # 10 s windows over the 25 s, the first taken
    assert summaries[0]["reasons"] == {"expired": 9, "wrong token": 30} and summaries[0]["streams"] == 4
    assert sum(1 for r in sink.records if r["event"] == "auth" and r["allowed"]) == 2
    overflow = [r for r in sink.records if r.get("address") == "*"]
    assert [(r["refused"], r["addresses"]) for r in overflow] == [(50, 50)]  # the publish burst was the 2nd
    assert kinds[-1] == ("auth", "203.0.113.1", "play", None)
    assert audit.aggregated == 99 + 50 and len(sink.records) == 1 + 3 + 2 + 1 + 1 + 1


async def test_json_lines_file_rotates_by_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "audit" / "log.jsonl"
    sink = JsonLinesFile(str(path), max_bytes=2048, backups=2)
    for n in range(60):
        await sink.write([{"event": "auth", "n": n, "pad": "x" * 80}])
    await sink.aclose()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["log.jsonl", "log.jsonl.1", "log.jsonl.2"]
    lines = [
        json.loads(line)
        for name in ("log.jsonl.2", "log.jsonl.1", "log.jsonl")
        for line in (path.parent / name).read_text().splitlines()
    ]
    assert [line["n"] for line in lines] == list(range(60 - len(lines), 60))
    assert all((path.parent / name).stat().st_size <= 2048 for name in files)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_parse_and_match_the_engine(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    from arcly_trio import TokenAuthenticator

    metrics = PrometheusObserver(per_stream=True)
    async with served(metrics, authenticator=TokenAuthenticator(play_token="v"), hls=True) as (engine, http):
        async with engine.publish("live/cam", Credentials(protocol="rtmp"), protocol="rtmp") as pub:
            async with engine.subscribe("live/cam", Credentials(token="v"), protocol="http-flv") as sub:
                for frame in demo_frames[:250]:
                    await pub.send(frame)
                with pytest.raises(Unauthorized):
                    async with engine.subscribe("live/cam", Credentials(token="no")):
                        pass
                stream = engine.stream("live/cam")
                with trio.fail_after(10):
                    while not metrics.hls_segments.labels("live", "ts")._sum.get():
                        await trio.sleep(0.02)
                    while sub.subscriber.bytes < stream.stats().bytes_total:
                        await trio.sleep(0.01)
                status, headers, body = await http_get(http.port, "/metrics")
                assert status == 200 and headers["content-type"] == CONTENT_TYPE_LATEST
                found = samples(body.decode())
                stats = stream.stats()
                assert found[("arcly_streams", (("app", "live"),))] == 1
                assert found[("arcly_publishers", (("protocol", "rtmp"),))] == 1
                assert found[("arcly_subscribers", (("protocol", "http-flv"),))] == 1
                assert found[("arcly_subscribers", (("protocol", "hls"),))] == 0  # the packager is no player
                assert found[("arcly_ingress_bytes_total", (("protocol", "rtmp"),))] == sum(
                    len(frame.payload) for frame in demo_frames[:250]
                )
                assert found[("arcly_egress_bytes_total", (("protocol", "http-flv"),))] == sub.subscriber.bytes
                assert found[("arcly_auth_refusals_total", (("action", "play"),))] == 1
                assert found[("arcly_connections", (("protocol", "http"),))] >= 1
                assert found[("arcly_hls_segment_duration_seconds_count", (("app", "live"), ("variant", "ts")))] >= 1
                assert (
                    found[("arcly_stream_received_bytes_total", (("app", "live"), ("stream", "cam")))]
                    == stats.bytes_total
                )
                build = [dict(labels) for name, labels in found if name == "arcly_build_info"]
                assert len(build) == 1 and (build[0]["trio"], build[0]["version"]) == (trio.__version__, "0.1.0")
    metrics.per_stream = False
    assert not any(name.startswith("arcly_stream_") for name, _ in samples(metrics.render().decode()))


async def test_labelled_series_exist_at_zero_and_there_are_no_created_series(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    """Issue 19, item 7: once the last player left, ``arcly_subscribers`` had no series at all
    (``sum(arcly_subscribers)`` answered ``[]``), and every counter had a ``*_created`` twin.
    Every known label set is there from the start at 0: each protocol of the workers and
    services (HLS and DASH included), each application, each action and role."""
    metrics = PrometheusObserver()
    async with served(metrics, hls=True) as (engine, http):

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return samples(metrics.render().decode())

        first = scrape()
        for protocol in ("http-flv", "ws-flv", "ws-frames", "hls", "dash"):
            assert first[("arcly_subscribers", (("protocol", protocol),))] == 0
            assert first[("arcly_plays_total", (("app", "live"), ("protocol", protocol)))] == 0
            assert first[("arcly_egress_bytes_total", (("protocol", protocol),))] == 0
        assert first[("arcly_publishers", (("protocol", "ws-frames"),))] == 0
        assert first[("arcly_publishes_total", (("app", "live"), ("protocol", "ws-frames")))] == 0
        for action in ("publish", "play"):
            assert first[("arcly_auth_refusals_total", (("action", action),))] == 0
            assert first[("arcly_sessions_kicked_total", (("role", action),))] == 0
        assert first[("arcly_subscriber_evictions_total", (("app", "live"),))] == 0
        async with engine.publish("live/cam", Credentials(protocol="ws-frames"), protocol="ws-frames") as pub:
            await pub.send(demo_frames[0])
            async with engine.subscribe("live/cam", Credentials(), protocol="http-flv"):
                assert scrape()[("arcly_subscribers", (("protocol", "http-flv"),))] == 1
            after = scrape()
        subscribers = {labels: value for (name, labels), value in after.items() if name == "arcly_subscribers"}
        assert subscribers and sum(subscribers.values()) == 0  # sum(arcly_subscribers) is 0, not empty
        assert after[("arcly_plays_total", (("app", "live"), ("protocol", "http-flv")))] == 1
        text = metrics.render().decode()
        assert "_created" not in text
        status, _, body = await http_get(http.port, "/metrics")
        assert status == 200 and b"_created" not in body
    # prometheus_client's process-wide switch was left alone: other registries keep theirs.
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    other = CollectorRegistry()
    Counter("other_things", "x", registry=other).inc()
    assert b"other_things_created" in generate_latest(other)


# ----------------------------------------------------------------------------- hooks


async def test_hooks_allow_refuse_rename_and_say_what_they_were_asked(demo_frames) -> None:  # type: ignore[no-untyped-def]
    with hook_server() as hooks:
        for path, expect in (("/allow", "allowed"), ("/deny", "refused"), ("/redirect/renamed", "renamed")):
            engine = (
                Engine.builder()
                .application("live")
                .authenticator(HttpHooks(on_publish=hooks.url(path), node="edge-1"))
                .build()
            )
            async with engine:
                credentials = Credentials(query={"token": "abc"}, peer=("198.51.100.2", 7), protocol="rtmp")
                if expect == "refused":
                    with pytest.raises(Unauthorized, match="on_publish hook answered 403: no such key"):
                        async with engine.publish("live/cam", credentials):
                            pass
                    continue
                async with engine.publish("live/cam", credentials) as pub:
                    assert pub.key == StreamKey("live", "renamed" if expect == "renamed" else "cam")
        documents = [document for _, document in hooks.calls]
        assert [d["action"] for d in documents] == ["publish"] * 3
        assert documents[0] | {"client_id": "-"} == {
            "action": "publish",
            "app": "live",
            "stream": "cam",
            "query": {"token": "abc"},
            "address": "198.51.100.2",
            "port": 7,
            "protocol": "rtmp",
            "client_id": "-",
            "node": "edge-1",
        }
        assert documents[0]["client_id"]


async def test_a_slow_or_dead_hook_refuses_without_stalling_anyone_else() -> None:
    with hook_server() as hooks, blackhole() as silent:
        slow = HttpHooks(on_publish=hooks.url("/slow/10"), on_play=hooks.url("/allow"), timeout=0.5)
        engine = Engine.builder().application("live").authenticator(slow).build()
        async with engine:
            done: dict[str, float] = {}

            async def publish_slowly() -> None:
                with pytest.raises(Unauthorized, match="authorization service unavailable"):
                    async with engine.publish("live/cam"):
                        pass
                done["publish"] = trio.current_time()

            async def play_meanwhile() -> None:
                with pytest.raises(Exception):  # allowed by the hook, then no such stream
                    async with engine.subscribe("live/other"):
                        pass
                done["play"] = trio.current_time()

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_slowly)
                nursery.start_soon(play_meanwhile)
            assert done["play"] - start < 0.4 <= done["publish"] - start < 2
        for url in (dead_url(), silent):
            refusing = Engine.builder().application("live").authenticator(HttpHooks(on_play=url, timeout=0.5)).build()
            async with refusing:
                with trio.fail_after(3), pytest.raises(Unauthorized, match="authorization service unavailable"):
                    async with refusing.subscribe("live/cam"):
                        pass
            lenient = (
                Engine.builder()
                .application("live")
                .authenticator(HttpHooks(on_play=url, timeout=0.5, fail_open=True))
                .build()
            )
            async with lenient:
                with trio.fail_after(3), pytest.raises(Exception) as caught:
                    async with lenient.subscribe("live/cam"):
                        pass
                assert not isinstance(caught.value, Unauthorized)  # let through: no such stream


async def test_a_failing_hook_gives_clients_a_generic_reason_and_the_log_the_detail(http_get, caplog) -> None:  # type: ignore[no-untyped-def]
    """Issue 18, finding 9: a hook failure was shown to the client (``403 ... ConnectError:
    all attempts to connect to 127.0.0.1:18099 failed``). Now the client reads ``authorization
    service unavailable`` (unreachable, timed out, or a ``5xx`` whose body may be a stack trace);
    the log has the detail, with the hook's URL stripped of its password and query. A ``4xx``
    still says what the hook said (its words for the client).
    Mutant killed: the failure text in the refusal's reason."""
    import logging

    caplog.set_level(logging.INFO)
    with hook_server() as hooks, blackhole() as silent:
        dead = dead_url()
        dead_port = dead.split(":")[2].split("/")[0]
        cases = {
            "unreachable": dead.replace("http://", "http://hook-user:canary-pass@") + "?key=canary-key",
            "timed out": silent.replace("http://", "http://hook-user:canary-pass@") + "?key=canary-key",
            "broken": hooks.url("/broken?key=canary-key").replace("http://", "http://hook-user:canary-pass@"),
        }
        for case, url in cases.items():
            caplog.clear()
            async with served(authenticator=HttpHooks(on_play=url, timeout=0.5)) as (engine, http):
                status, _, body = await http_get(http.port, "/live/cam.flv")
            assert status == 403 and body == b"play of live/cam refused: authorization service unavailable\n", case
            logged = [r.getMessage() for r in caplog.records if r.name == "arcly_trio.hooks"]
            assert len(logged) == 1, logged
            line = logged[0]
            assert "(http://***@127.0.0.1:" in line and "?key=***; refused)" in line, line
            assert {
                "unreachable": "on_play hook failed: ConnectError",
                "timed out": "on_play hook timed out after 0.5 s",
                "broken": "on_play hook answered 500 for play of live/cam",
            }[case] in line, line
            assert case != "broken" or "refused): Traceback" in line, line
            # httpx logs each request with its URL at INFO: serve sets it to WARNING (test_cli)
            everything = " ".join(r.getMessage() for r in caplog.records if r.name != "httpx") + body.decode()
            assert "canary" not in everything and "hook-user" not in everything, case
            assert (case == "broken") == ("hunter2" in everything)  # the hook's own words: the log only
            assert dead_port not in body.decode() and "ConnectError" not in body.decode()
        async with served(authenticator=HttpHooks(on_play=hooks.url("/deny"))) as (engine, http):
            status, _, body = await http_get(http.port, "/live/cam.flv")
        assert status == 403 and b"on_play hook answered 403: no such key" in body


def test_serve_keeps_httpx_from_logging_hook_urls(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """httpx logs ``HTTP Request: POST http://user:password@host/hook?key=...`` at INFO: serve's
    logging holds it to warnings. Mutant killed: serve logging httpx at the server's level."""
    import logging

    from arcly_trio.server.cli import configure_logging

    for name in ("httpx", "httpcore"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    configure_logging("debug")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING


async def test_a_hook_answer_is_read_up_to_a_limit_and_hls_answers_are_cached() -> None:
    with hook_server() as hooks:
        big = HttpHooks(on_play=hooks.url("/huge"), max_body=1000)
        assert await big.ask("play", StreamKey("live", "x"), Credentials()) == StreamKey("live", "x")
        cached = HttpHooks(on_play=hooks.url("/allow"), cache_seconds=30)
        hls = Credentials(protocol="hls", peer=("198.51.100.3", 1), query={"token": "t", "_HLS_msn": "3"})
        for _ in range(5):
            await cached.ask("play", StreamKey("live", "cam"), hls)
        await cached.ask("play", StreamKey("live", "cam"), Credentials(protocol="http-flv"))
        await cached.ask("play", StreamKey("live", "cam"), Credentials(protocol="http-flv"))
        assert cached.calls == 3 and len(hooks.documents("/allow")) == 3


async def test_on_event_notifications_arrive_and_overflow_is_counted(demo_frames, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from arcly_trio.services import FlvRecorder

    with hook_server() as hooks:
        events = EventHook(hooks.url("/events"))
        recorder = FlvRecorder(tmp_path)
        engine = (
            Engine.builder()
            .application(AppSpec("live", record=True))
            .service(recorder)
            .observer(events)
            .idle_timeout(1)
            .build()
        )
        async with engine:
            async with engine.publish("live/cam", Credentials(peer=("198.51.100.4", 9))) as pub:
                for frame in demo_frames[:30]:
                    await pub.send(frame)
                async with engine.subscribe("live/cam"):
                    pass
            with pytest.raises(StreamIdleReaped):  # after 1 s without a frame
                async with engine.publish("live/idle") as idle:
                    await idle.send(demo_frames[0])
                    await trio.sleep_forever()
            with trio.fail_after(10):
                while "stream-reaped" not in [d["event"] for d in hooks.documents("/events")] or events.sent < 8:
                    await trio.sleep(0.01)
        names = [document["event"] for document in hooks.documents("/events")]
        assert [n for n in names if n != "recording-start"][:4] == [
            "publish-start",
            "play-start",
            "play-end",
            "publish-end",
        ]
        assert names.index("recording-start") < names.index("recording-done")
        assert "stream-reaped" in names
        assert hooks.documents("/events")[0]["address"] == "198.51.100.4"
        done = next(d for d in hooks.documents("/events") if d["event"] == "recording-done" and d["stream"] == "cam")
        assert done["ok"] and done["file"].startswith(str(tmp_path)) and done["bytes"] > 0
        assert (tmp_path / done["file"]).stat().st_size == done["bytes"]
        slow = EventHook(hooks.url("/slow/5"), capacity=2, timeout=0.2)
        async with served(slow) as (engine, _):
            for n in range(10):
                async with engine.publish(f"live/s{n}") as pub:
                    await pub.send(demo_frames[0])
            assert slow.dropped >= 10 * 2 - 3


async def test_guessing_the_api_token_is_slowed_down(http_get) -> None:  # type: ignore[no-untyped-def]
    """Attack: trying API tokens as fast as possible. Each refusal doubles the address's delay
    (the engine's throttle), so a guesser gets a handful of tries a second; the right token
    then resets it."""
    from arcly_trio.kernel.throttle import AuthThrottle

    http = HttpServer("127.0.0.1", 0, api_token="k3y")
    engine = (
        Engine.builder()
        .application("live")
        .protocol(http)
        .auth_throttle(AuthThrottle(base_delay=0.05, max_delay=0.4))
        .build()
    )
    async with engine:
        tries = 0
        with trio.move_on_after(1.5):
            while True:
                assert (await http_get(http.port, "/api/sessions?api_token=guess"))[0] == 403
                tries += 1
        assert 3 <= tries <= 8 and engine.auth_throttle.delayed >= tries - 1
        assert (await http_get(http.port, "/api/sessions?api_token=k3y"))[0] == 200
        assert engine.auth_throttle.delay("127.0.0.1", "api") == 0


# --------------------------------------------- issue 18, finding 5: who may see and kick clients


def seen_from(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """Make the workers see each new TCP connection as coming from ``address``: they learn a
    peer's address in one place, ``peer_of`` in their connection runner (the tests' connections
    really come from 127.0.0.1; a non-loopback peer cannot be had on every machine)."""
    import arcly_trio.workers.serving as serving

    monkeypatch.setattr(serving, "peer_of", lambda stream: (address, 40000))


async def test_without_an_api_token_sessions_and_kicks_answer_only_this_machine(
    demo_frames, http_get, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    # Without --api-token, GET /api/sessions (every client's address) and DELETE
    # /api/sessions/{id} answered anyone; /api/streams showed every publisher's address.
    async with served(PrometheusObserver()) as (engine, http):
        with pytest.raises(PublisherKicked):  # at the end, by a local operator
            async with engine.publish("live/cam", Credentials(peer=("198.51.100.9", 5000), protocol="rtmp")) as pub:
                await pub.send(demo_frames[0])
                await _sessions_answer_only_this_machine(engine, http, http_get, monkeypatch)
                await trio.sleep_forever()  # the kick cancels the publisher's block


async def _sessions_answer_only_this_machine(
    engine: Engine, http: HttpServer, http_get: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (session,) = list(engine.sessions)
    port = http.port
    status, _, body = await http_get(port, "/api/sessions")
    assert status == 200 and json.loads(body)["sessions"][0]["address"] == "198.51.100.9"  # local: all
    status, _, body = await http_get(port, "/api/streams")
    assert json.loads(body)["apps"][0]["streams"][0]["publisher"]["address"] == "198.51.100.9"
    # From this machine, but not for this machine: a DNS-rebound page, a local reverse proxy.
    for headers in (
        [("host", "evil.example:8080")],
        [("host", "127.0.0.1"), ("x-forwarded-for", "203.0.113.7")],
        [("host", "localhost"), ("forwarded", "for=203.0.113.7")],
    ):
        status, _, body = await http_get(port, "/api/sessions", headers)
        assert status == 403 and b"--api-token" in body, headers
    seen_from(monkeypatch, "203.0.113.7")
    status, headers, body = await http_get(port, "/api/sessions")
    assert status == 403 and b"--api-token" in body and b"198.51.100.9" not in body
    assert "access-control-allow-origin" not in headers
    status, _, body = await http_get(port, f"/api/sessions/{session.id}", method="DELETE")
    assert status == 403 and engine.sessions.get(session.id) is session  # not kicked
    status, _, body = await http_get(port, "/api/streams")  # the status page still works...
    publisher_document = json.loads(body)["apps"][0]["streams"][0]["publisher"]
    assert status == 200 and publisher_document["protocol"] == "rtmp"
    assert (publisher_document["address"], publisher_document["port"]) == (None, None)  # ...without addresses
    assert b"198.51.100.9" not in body
    for path in ("/metrics", "/api/health"):  # no per-client detail there: open, but without CORS
        status, headers, body = await http_get(port, path)
        assert status == 200 and b"198.51.100.9" not in body and "access-control-allow-origin" not in headers
        status, headers, _ = await http_get(port, path, [("origin", "http://evil.example")], method="OPTIONS")
        assert status == 204 and "access-control-allow-origin" not in headers  # nor in a preflight
    monkeypatch.undo()
    status, _, body = await http_get(port, f"/api/sessions/{session.id}", method="DELETE")
    assert status == 200 and engine.sessions.get(session.id) is None


async def test_with_an_api_token_a_remote_operator_sees_the_clients(demo_frames, http_get, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async with (
        served(api_token="k3y") as (engine, http),
        engine.publish("live/cam", Credentials(peer=("198.51.100.9", 5000), protocol="rtmp")) as publisher,
    ):
        await publisher.send(demo_frames[0])
        seen_from(monkeypatch, "203.0.113.7")
        bearer = [("host", "stream.example"), ("authorization", "Bearer k3y")]
        assert (await http_get(http.port, "/api/sessions"))[0] == 401
        status, _, body = await http_get(http.port, "/api/sessions", bearer)
        assert status == 200 and json.loads(body)["sessions"][0]["address"] == "198.51.100.9"
        status, _, body = await http_get(http.port, "/api/streams", bearer)
        assert json.loads(body)["apps"][0]["streams"][0]["publisher"]["address"] == "198.51.100.9"


def test_session_ids_cannot_be_guessed() -> None:
    # Ids were 1, 2, 3...: anyone could kick every session by counting.
    from arcly_trio.kernel.sessions import SessionTable

    ids = [SessionTable("w3-").new_id() for _ in range(200)] + [SessionTable("w3-").new_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)  # two tables (two workers, two runs) never repeat an id
    for session_id in ids:
        assert session_id.startswith("w3-")  # the workers still route kicks by the prefix
        rest = session_id[len("w3-") :]
        assert len(rest) >= 16 and not rest.isdigit()
    assert {session_id[3] for session_id in ids} > set("0123456789")  # random letters, not a counter


async def test_metrics_count_rate_limited_publishers_and_hls_dropped_early(demo_frames, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """Issue 18, finding 11: a publisher cut by its bitrate limit and HLS resources deleted early
    by the per-stream byte cap are counted in ``/metrics``."""
    from tests._tools import stuffed

    metrics = PrometheusObserver()
    hls = HlsService(variant="ll", max_bytes=1024 * 1024)
    builder = Engine.builder().application(AppSpec("live", hls=True, max_publish_bitrate=8_000_000))
    async with builder.service(hls).observer(metrics).build() as engine:
        with pytest.raises(PublishRateLimited):
            async with engine.publish("live/fast", Credentials(peer=("198.51.100.4", 1))) as publisher:
                start = trio.current_time()
                for frame in demo_frames:  # 60 KB video frames at 30 fps: 14 Mbit/s
                    await trio.sleep_until(start + frame.dts / 1000)
                    await publisher.send(stuffed(frame, 60_000))
        found = samples(metrics.render().decode())
    assert found[("arcly_publishes_rate_limited_total", (("app", "live"),))] == 1
    assert found[("arcly_hls_dropped_early_total", ())] == hls.dropped_early > 0
