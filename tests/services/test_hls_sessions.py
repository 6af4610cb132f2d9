"""HLS and DASH players' sessions (issue 19, item 2), in one process over loopback.

A player that polls playlists and segments is one session (:mod:`arcly_trio.kernel.polled`):
authorized once (one ``on_play`` call, one ``auth`` audit record), counted in ``/api/streams``,
``/api/sessions``, ``arcly_subscribers`` and ``arcly_plays_total``, told as ``play-start`` and
``play-end`` (audit log, ``on_event``), ended when it stops asking, kickable (its id is then
answered ``410``; the kick says who asked). The DASH MPD names its reload URL with the id
(``Location``) and a client that reloads without it (ffmpeg) stays in its session by the
cookie. The table is capped per address and in all (an attacker making a session per request
holds no more) and returns to empty.

Real time with short periods (session timeout 0.4 s); every test is bounded by ``fail_after``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from arcly_trio import AppSpec, Credentials, Engine, StreamKey, TokenAuthenticator
from arcly_trio.core.frame import Frame
from arcly_trio.kernel.events import StreamEvent, SubscriberJoined, SubscriberLeft
from arcly_trio.kernel.fanout import EndReason
from arcly_trio.kernel.polled import SESSION_ID, PolledSessions
from arcly_trio.kernel.sessions import SessionTable
from arcly_trio.ops import AuditPipeline, EventHook, HttpHooks, MemorySink, PrometheusObserver
from arcly_trio.ops.signing import SignedUrlAuthenticator, nms_sign
from arcly_trio.services import HlsService
from arcly_trio.testing import CountingObserver
from arcly_trio.workers.http import HttpServer
from tests._hls import media_playlist, uris
from tests._hooks import hook_server
from tests._serving import wait_until

SESSION = re.compile(r"arcly_session=([A-Za-z0-9_-]{16})")
TIMEOUT = 0.4


@attrs.define
class Served:
    engine: Engine
    http: HttpServer
    hls: HlsService
    audit: MemorySink
    observer: CountingObserver
    metrics: PrometheusObserver

    @property
    def port(self) -> int:
        assert self.http.port is not None
        return self.http.port

    def records(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.audit.records if r["event"] == event and all(r.get(k) == v for k, v in fields.items())]

    def metric(self, name: str, **labels: str) -> float | None:
        for family in text_string_to_metric_families(self.metrics.render().decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None


async def publishing(engine: Engine, frames: list[Frame], *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Publish ``frames`` (paced, looped) into ``live/cam`` until cancelled."""
    async with engine.publish("live/cam", Credentials(peer=("198.51.100.9", 5000), protocol="rtmp")) as publisher:
        task_status.started()
        for loop in range(100):
            for frame in frames:
                if loop and frame.config:
                    continue
                await publisher.send(frame.shifted(loop * 10_000) if loop else frame)
                if not frame.config:
                    await trio.sleep(0.004)


@asynccontextmanager
async def served(
    demo_frames: list[Frame],
    *,
    variant: str = "ts",
    observers: tuple[Any, ...] = (),
    authenticator: Any = None,
    api_token: str | None = None,
) -> AsyncIterator[Served]:
    """A server with HLS (``variant``), the metrics, an audit log in memory and a counting
    observer, publishing ``live/cam`` until the end of the block, its first lists stored."""
    http = HttpServer("127.0.0.1", 0, api_token=api_token, max_pending_per_address=None)
    hls = HlsService(variant=variant, target_duration=0.5, session_timeout=TIMEOUT, all_apps=True)
    audit, observer, metrics = MemorySink(), CountingObserver(), PrometheusObserver()
    builder = Engine.builder().application(AppSpec("live")).protocol(http).service(hls)
    for each in (metrics, AuditPipeline(audit), observer, *observers):
        builder.observer(each)
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine, trio.open_nursery() as nursery:
        await nursery.start(publishing, engine, demo_frames)
        with trio.fail_after(10):
            while "live/cam" not in hls.streams or "index.m3u8" not in hls.streams["live/cam"].lists:
                await trio.sleep(0.02)
        yield Served(engine, http, hls, audit, observer, metrics)
        nursery.cancel_scope.cancel()


wait_for = functools.partial(wait_until, timeout=10.0)


async def play(http_get: Any, port: int, entry: str, rounds: int = 4, query: str = "") -> str:
    """Play like a player: the entry playlist, then its media playlist and new segments,
    ``rounds`` times; the session id its URIs carry."""
    status, _, body, target = await media_playlist(http_get, port, f"/live/cam/{entry}{query}")
    assert status == 200, body
    seen: set[str] = set()
    for _ in range(rounds):
        for uri in uris(body):
            if uri not in seen:
                seen.add(uri)
                status, _, _ = await http_get(port, f"/live/cam/{uri}")
                assert status == 200, uri
        await trio.sleep(0.15)
        status, _, body = await http_get(port, target)
        assert status == 200, body
    found = SESSION.search(body.decode())
    assert found is not None, body
    return found.group(1)


async def test_an_hls_player_is_one_session_counted_authorized_and_told_once(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    with hook_server() as hooks:
        on_play = HttpHooks(on_play=hooks.url("/allow"), cache_seconds=0)  # no cache: each ask is a call
        events = EventHook(hooks.url("/events"))
        async with served(demo_frames, observers=(events,), authenticator=on_play) as server:
            session = await play(http_get, server.port, "index.m3u8?token=t")
            # /api/streams, /api/sessions, the metrics: one HLS player.
            stream = json.loads((await http_get(server.port, "/api/streams"))[2])["apps"][0]["streams"][0]
            assert stream["subscribers"] == {"total": 1, "by_protocol": {"hls": 1}}
            listed = json.loads((await http_get(server.port, "/api/sessions"))[2])["sessions"]
            players = [s for s in listed if s["role"] == "play"]
            assert [(s["id"], s["protocol"], s["key"]) for s in players] == [(session, "hls", "live/cam")]
            assert players[0]["bytes"] > 100_000  # the playlists and segments it was given
            assert server.metric("arcly_subscribers", protocol="hls") == 1
            assert server.metric("arcly_plays_total", app="live", protocol="hls") == 1
            # Authorized once: one on_play call (with the session's id), one auth record.
            assert [d["client_id"] for d in hooks.documents("/allow")] == [session]
            await wait_for(lambda: server.records("play-start"))
            assert len(server.records("auth", action="play")) == 1
            assert [r["client_id"] for r in server.records("play-start", protocol="hls")] == [session]
            # The player stops asking: its session ends after the timeout, and is told.
            await wait_for(lambda: not server.engine.polled)
            stream = json.loads((await http_get(server.port, "/api/streams"))[2])["apps"][0]["streams"][0]
            assert stream["subscribers"]["total"] == 0
            await wait_for(lambda: server.records("play-end"))
            end = server.records("play-end")[0]
            assert (end["client_id"], end["reason"], end["protocol"]) == (session, "idle", "hls")
            assert end["bytes"] >= players[0]["bytes"]
            assert server.metric("arcly_egress_bytes_total", protocol="hls") == end["bytes"]
            await wait_for(lambda: any(d["event"] == "play-end" for d in hooks.documents("/events")))
        told = [(d["event"], d.get("client_id")) for d in hooks.documents("/events") if d["event"].startswith("play")]
        assert told == [("play-start", session), ("play-end", session)]


async def test_the_ts_entry_playlist_names_the_media_playlist_with_the_session(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    async with served(demo_frames) as server:
        status, headers, body = await http_get(server.port, "/live/cam/index.m3u8?token=t")
        text = body.decode()
        assert status == 200 and "#EXT-X-STREAM-INF:BANDWIDTH=" in text
        bandwidth = int(re.search(r"BANDWIDTH=([0-9]+)", text).group(1))  # type: ignore[union-attr]
        assert 100_000 < bandwidth < 50_000_000
        [variant] = uris(body)
        session = SESSION.search(variant).group(1)  # type: ignore[union-attr]
        assert variant == f"index.m3u8?token=t&arcly_session={session}"
        assert headers["set-cookie"] == f"arcly_session={session}; Path=/live/cam/; HttpOnly; SameSite=Lax"
        status, _, media = await http_get(server.port, f"/live/cam/{variant}")
        assert status == 200 and b"#EXTINF" in media
        assert all(uri.endswith(f".ts?token=t&arcly_session={session}") for uri in uris(media))
        assert server.engine.polled.started_total == 1


async def test_a_dash_client_reloading_the_mpd_without_the_id_stays_in_its_session_by_the_cookie(
    demo_frames, http_get
) -> None:  # type: ignore[no-untyped-def]
    async with served(demo_frames, variant="ll") as server:
        await wait_for(lambda: "index.mpd" in server.hls.streams["live/cam"].lists)
        status, headers, mpd = await http_get(server.port, "/live/cam/index.mpd")
        assert status == 200
        session = SESSION.search(mpd.decode()).group(1)  # type: ignore[union-attr]
        assert f"<Location>index.mpd?arcly_session={session}</Location>".encode() in mpd
        assert mpd.count(f".m4s?arcly_session={session}".encode()) == 2
        cookie = [("cookie", headers["set-cookie"].partition(";")[0])]
        polled = server.engine.polled
        # ffmpeg's way: the MPD again at its first URL, with the cookie: the same session.
        for _ in range(3):
            status, _, again = await http_get(server.port, "/live/cam/index.mpd", headers=cookie)
            assert status == 200 and session.encode() in again
        await wait_for(lambda: server.records("play-start"))
        assert polled.started_total == 1 and len(server.records("auth", action="play")) == 1
        # dash.js' way: the Location. From then on the cookie no longer joins: a second player
        # of the same browser (same cookie) is a session of its own.
        assert (await http_get(server.port, f"/live/cam/index.mpd?arcly_session={session}"))[0] == 200
        status, _, other = await http_get(server.port, "/live/cam/index.mpd", headers=cookie)
        assert status == 200 and session.encode() not in other
        assert polled.started_total == 2
        await wait_for(lambda: len(server.records("auth", action="play")) == 2)
        stream = json.loads((await http_get(server.port, "/api/streams"))[2])["apps"][0]["streams"][0]
        assert stream["subscribers"] == {"total": 2, "by_protocol": {"dash": 2}}
        assert server.metric("arcly_plays_total", app="live", protocol="dash") == 2


@pytest.mark.parametrize("api_token", [None, "k3y"])
async def test_a_kicked_session_gets_410_and_the_kick_says_who_asked(demo_frames, http_get, caplog, api_token) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="arcly_trio.engine")
    async with served(demo_frames, api_token=api_token) as server:
        session = await play(http_get, server.port, "index.m3u8", rounds=1)
        auth = [("authorization", f"Bearer {api_token}")] if api_token else []
        status, _, body = await http_get(server.port, f"/api/sessions/{session}", method="DELETE", headers=auth)
        assert status == 200 and json.loads(body)["kicked"]["protocol"] == "hls"
        for target in (f"/live/cam/index.m3u8?arcly_session={session}", f"/live/cam/x-1.ts?arcly_session={session}"):
            assert (await http_get(server.port, target))[0] == 410
        who = f"{'api-token holder' if api_token else 'local operator'} at 127.0.0.1"
        await wait_for(lambda: server.records("kick") and server.records("play-end"))
        assert server.records("kick")[0]["by"] == who and server.records("kick")[0]["client_id"] == session
        assert server.records("play-end")[0]["reason"] == "kicked"
        assert any(
            f"session {session}" in r.getMessage() and f"kicked by {who}" in r.getMessage() for r in caplog.records
        )
        # Starting again from the entry URL is a new, authorized session.
        assert await play(http_get, server.port, "index.m3u8", rounds=1) != session
        assert len(server.records("auth", action="play")) == 2


async def open_get(port: int, target: str, local: str) -> tuple[int, bytes]:
    """GET ``target`` from the local address ``local`` (another loopback address)."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
        async with stream:
            await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_an_id_from_another_address_or_not_live_is_authorized_again(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    auth = TokenAuthenticator(play_token="t")
    async with served(demo_frames, authenticator=auth) as server:
        polled = server.engine.polled
        session = await play(http_get, server.port, "index.m3u8?token=t", rounds=1)
        decisions = len(server.records("auth", action="play"))
        # The id alone, from another address, is no credential.
        status, _ = await open_get(server.port, f"/live/cam/index.m3u8?arcly_session={session}", "127.0.0.2")
        assert status == 401
        # With the credentials it is authorized again, and the session goes on from there.
        status, _ = await open_get(server.port, f"/live/cam/index.m3u8?token=t&arcly_session={session}", "127.0.0.2")
        await wait_for(lambda: len(server.records("auth", action="play")) == decisions + 2)
        live = polled.get(session)
        assert status == 200 and live is not None and live.peer is not None and live.peer[0] == "127.0.0.2"
        assert polled.started_total == 1
        # Once it has ended (idle), its id is authorized again and continues (the same URLs).
        await wait_for(lambda: not polled)
        status, _, body = await http_get(server.port, f"/live/cam/index.m3u8?token=t&arcly_session={session}")
        assert status == 200 and b"#EXTINF" in body and polled.get(session) is not None
        assert polled.started_total == 2
        # An id that is not one of ours is ignored: a new one.
        status, _, body = await http_get(server.port, "/live/cam/index.m3u8?token=t&arcly_session=../../x")
        assert status == 200 and SESSION.search(body.decode()).group(1) != session  # type: ignore[union-attr]


async def test_a_session_per_request_is_capped_per_address_and_in_all_and_the_table_empties(
    demo_frames, http_get
) -> None:  # type: ignore[no-untyped-def]
    async with served(demo_frames) as server:
        polled = server.engine.polled
        polled.max_per_address, polled.max_sessions = 4, 6
        for _ in range(10):  # an attacker: a new session per request (no id, no cookie)
            assert (await http_get(server.port, "/live/cam/index.m3u8"))[0] == 200
        assert len(polled) == 4 and polled.limited_total == 6
        for _ in range(5):
            assert (await open_get(server.port, "/live/cam/index.m3u8", "127.0.0.2"))[0] == 200
        assert len(polled) == 6 and polled.limited_total == 9  # 2 for the cap in all, 1 for .2's
        assert len(server.engine.sessions) == 1 + 6  # the publisher and the capped players
        stream = json.loads((await http_get(server.port, "/api/streams"))[2])["apps"][0]["streams"][0]
        assert stream["subscribers"]["total"] == 6
        await wait_for(lambda: not polled)
        assert not (polled._by_address or polled._players or polled._recent or polled._by_timeout)
        assert len(server.engine.sessions) == 1
        await wait_for(lambda: len(server.observer.of_type(SubscriberLeft)) == 15)
        reasons = sorted(e.reason for e in server.observer.of_type(SubscriberLeft))  # type: ignore[attr-defined]
        assert reasons == ["idle"] * 6 + ["session-limit"] * 9


# --- the table itself, under the autojump clock --------------------------------------------------


def table(**limits: Any) -> tuple[PolledSessions, SessionTable, list[StreamEvent]]:
    sessions = SessionTable()
    told: list[StreamEvent] = []
    ids = count(1)
    return PolledSessions(sessions, told.append, lambda: next(ids), **limits), sessions, told


async def test_idle_sessions_end_a_request_in_flight_is_activity_and_a_flood_stays_capped(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    polled, sessions, told = table(max_sessions=100, max_per_address=10)
    key = StreamKey("live", "cam")
    async with trio.open_nursery() as nursery:
        await nursery.start(polled.run)
        busy = polled.begin(key, key, "hls", Credentials(peer=("203.0.113.1", 1)), b"d" * 16, 2.0)
        idle = polled.begin(key, key, "hls", Credentials(peer=("203.0.113.1", 2)), b"d" * 16, 2.0)
        with polled.request(busy):  # a blocking reload held for longer than the timeout
            await trio.sleep(5)
            assert polled.get(busy.id) is busy and polled.get(idle.id) is None
        await trio.sleep(1.9)
        assert polled.get(busy.id) is busy
        await trio.sleep(0.2)
        assert not polled and not sessions
        # A flood of sessions from many addresses: never more than the caps hold.
        for n in range(20_000):
            polled.begin(key, key, "dash", Credentials(peer=(f"198.51.{n % 250}.{n % 7}", n)), b"x" * 16, 2.0)
            assert len(polled) <= 100
        assert polled.players(key) == {"dash": 100} and len(sessions) == 100
        joined, left = (
            [e for e in told if isinstance(e, SubscriberJoined)],
            [e for e in told if isinstance(e, SubscriberLeft)],
        )
        assert len(joined) == 20_002 and len(left) == 20_002 - 100
        nursery.cancel_scope.cancel()
    assert not polled and not sessions  # the engine stopping ends them
    assert [e.reason for e in told[-100:]] == [EndReason.SHUTDOWN.value] * 100  # type: ignore[attr-defined]


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["begin"] * 4 + ["request", "kick", "wait", "expire"]), st.integers(0, 7), st.integers(0, 2)
    ),
    min_size=8,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations=OPERATIONS)
def test_the_table_stays_consistent_and_within_its_caps_whatever_happens(
    operations: list[tuple[str, int, int]],
) -> None:
    """Any sequence of begins (from 8 addresses, for 3 streams, some continuing an id),
    requests, kicks, waits and expiries: the caps hold, the counts agree with what is live, each
    session is told begun once and ended once, and a kicked id is remembered."""

    async def run() -> None:
        polled, sessions, told = table(max_sessions=6, max_per_address=3)
        keys = [StreamKey("live", f"s{n}") for n in range(3)]
        kicked: set[str] = set()
        for op, a, b in operations:
            live = list(polled)
            if op == "begin":  # b == 2: continuing a live id (the least recently active one if a < 2)
                reuse = (
                    (live[a % len(live)] if a >= 2 else next(iter(polled._recent.values()))).id
                    if live and b == 2
                    else ""
                )
                polled.begin(
                    keys[b],
                    keys[b],
                    ("hls", "dash")[a % 2],
                    Credentials(peer=(f"203.0.113.{a}", 1), client_id=reuse),
                    bytes(16),
                    1.0 + b,
                )
            elif op == "request" and live:
                with polled.request(live[a % len(live)], in_url=bool(b)):
                    await trio.sleep(b)
            elif op == "kick" and live:
                kicked.add(live[a % len(live)].id)
                assert sessions.kick(live[a % len(live)].id) is not None
            elif op == "wait":
                await trio.sleep(a / 2)
            else:
                polled.expire()
            live = list(polled)
            assert len(live) <= 6 and len(sessions) == len(live)
            ids = {s.id for s in live}  # every index holds exactly the live sessions
            assert set(polled._recent) == ids and not any(s.ended for s in polled._recent.values())
            assert {i for group in polled._by_address.values() for i in group} == ids
            assert {i for group in polled._by_timeout.values() for i in group} == ids
            for address in {s.peer for s in live}:
                assert sum(1 for s in live if s.peer == address) <= 3
            for key in keys:
                assert sum(polled.players(key).values()) == sum(1 for s in live if s.served == key)
            joined = Counter(e.client_id for e in told if isinstance(e, SubscriberJoined))  # type: ignore[attr-defined]
            left = Counter(e.client_id for e in told if isinstance(e, SubscriberLeft))  # type: ignore[attr-defined]
            assert all(joined[i] - left[i] in (0, 1) for i in joined)
            assert {i for i in joined if joined[i] > left[i]} == {s.id for s in live}
            assert all(polled.was_kicked(i) for i in kicked)
        polled.end_all(EndReason.SHUTDOWN)
        assert not polled._by_address and not polled._players and not polled._recent and not polled._by_timeout

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))


@given(value=st.text(max_size=300), peer_id=st.text(max_size=40))
def test_the_cookie_and_the_query_give_only_ids_of_ours(value: str, peer_id: str) -> None:
    from arcly_trio.protocols.http.router import HttpRequest
    from arcly_trio.services.hls_routes import _cookie, _presented

    request = HttpRequest(
        "GET",
        "/live/cam/index.mpd",
        "/live/cam/index.mpd",
        {"arcly_session": peer_id, "_HLS_msn": "1", "token": "t"},
        (("cookie", value),),
    )
    found = _cookie(request)
    assert found == "" or (SESSION_ID.fullmatch(found) and f"arcly_session={found}" in value)
    assert _presented(request) == {"token": "t"}


async def test_a_session_id_serves_parts_only_while_its_session_is_live_for_that_stream_and_address(
    demo_frames, http_get
) -> None:  # type: ignore[no-untyped-def]
    """The resumed session's shortcut (no authorization per request) holds only for a live session
    of that stream from that address: closed, on another stream's path or from another address,
    the id is no credential and the next part is refused."""
    auth = TokenAuthenticator(play_token="t")
    async with served(demo_frames, authenticator=auth) as server:
        session = await play(http_get, server.port, "index.m3u8?token=t", rounds=1)
        status, _, body = await http_get(server.port, f"/live/cam/index.m3u8?arcly_session={session}")
        segment = next(uri for uri in uris(body) if ".ts" in uri)
        decisions = len(server.records("auth", action="play"))
        assert (await http_get(server.port, f"/live/cam/{segment}"))[0] == 200
        assert len(server.records("auth", action="play")) == decisions  # served by the session
        name = segment.partition("?")[0]
        assert (await http_get(server.port, f"/live/other/{name}?arcly_session={session}"))[0] == 401
        assert (await open_get(server.port, f"/live/cam/{segment}", "127.0.0.2"))[0] == 401
        live = server.engine.polled.get(session)
        assert live is not None
        server.engine.polled.end(live, EndReason.IDLE)  # closed: the id alone is refused again
        assert (await http_get(server.port, f"/live/cam/{segment}"))[0] == 401


async def test_a_session_ends_its_reuse_of_the_decision_when_its_signed_url_expires(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    """A session is resumed without authorization only until its signature expires: a player
    that keeps asking is refused (``403``) from then on, its parts as its playlists."""
    expiry = int(time.time()) + 2
    sign = nms_sign("live", "cam", expiry, "s3cret")
    async with served(demo_frames, authenticator=SignedUrlAuthenticator("s3cret", actions=("play",))) as server:
        session = await play(http_get, server.port, "index.m3u8", rounds=1, query=f"?sign={sign}")
        live = server.engine.polled.get(session)
        assert live is not None and live.valid_until == expiry
        status, _, body = await http_get(server.port, f"/live/cam/index.m3u8?sign={sign}&arcly_session={session}")
        segment = next(uri for uri in uris(body) if ".ts" in uri)
        statuses = []
        with trio.fail_after(10):  # without the expiry, the session would serve it for ever
            while not statuses or statuses[-1] == 200:  # keep the session busy (0.4 s idle timeout)
                statuses.append((await http_get(server.port, f"/live/cam/{segment}"))[0])
                await trio.sleep(0.05)
        assert statuses[-1] == 403 and time.time() >= expiry
        status, _, _ = await http_get(server.port, f"/live/cam/index.m3u8?sign={sign}&arcly_session={session}")
        assert status == 403
