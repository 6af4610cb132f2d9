"""The HTTP worker's session hub (:mod:`arcly_trio.workers.http.hub`): one task serving every
session-lane connection through a private epoll (Linux).

Real sockets on 127.0.0.1 and the real clock, waits on conditions (never on sleeps): many
connections lent to the one hub with pipelined requests; held reloads of many connections
answered in one pass (one wait on the stream, not one per request); the head and keep-alive
timeouts and a held reload's ``503`` kept by the hub's timer; a client that vanishes while
its answer is written; graceful shutdown (held requests finished, idle connections closed);
and the lane's hypothesis equivalence test with the hub serving the lane's connections.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio import PublishEnded
from arcly_trio.services import hls_routes
from arcly_trio.workers.http import hub as hub_module
from tests.services.test_hls_cmaf import llhls_server, packaged, video_of, wait_for
from tests.workers.test_http_session_lane import RawConnection, _session, body_of, equivalence, request, status_of

pytestmark = pytest.mark.skipif(not hub_module.available(), reason="the session hub needs epoll (Linux)")


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_the_hub_answers_byte_identically_to_the_handlers_or_declines(data: Any) -> None:
    """The lane's equivalence test (:func:`.test_http_session_lane.equivalence`), its lane
    connections served by the hub."""
    equivalence(data, hub=True)


async def test_many_connections_with_pipelined_requests_on_one_hub(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Twenty connections, each sending three pipelined requests at a time, twice, are all
    answered in order by the hub (they stay lent to it between requests), and counted in the
    session; a request the lane declines goes back to the connection's task and is answered
    by the handler on the same connection; 400 pipelined in one go are answered in slices
    (mutant killed: each answer serving the next heads from within itself, a recursion)."""
    async with llhls_server(session_hub=True) as (engine, http, hls), engine.publish("live/demo") as publisher:
        await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 1)
        await wait_for(lambda: hls.live["live/demo"].current)
        session, parts = await _session(http.port)
        polled = engine.polled.get(session)
        requests = polled.requests
        query = f"?arcly_session={session}"
        conns = [await RawConnection.open(http.port) for _ in range(20)]
        answered = http.lane_answers
        for _ in range(2):
            for conn in conns:
                await conn.send(request(f"/live/demo/video.m3u8{query}"), request(f"/live/demo/{parts[0]}{query}", "HEAD"),
                                request(f"/live/demo/{parts[0]}{query}"))  # fmt: skip
            for conn in conns:
                listed, head, part = await conn.answer(), await conn.answer(head=True), await conn.answer()
                assert [status_of(a) for a in (listed, head, part)] == [200, 200, 200]
                assert b"#EXTM3U" in body_of(listed) and body_of(part)
        assert http.lane_answers == answered + 120 and polled.requests == requests + 120
        assert http.hub is not None
        await wait_for(lambda: http.hub.lent == 20)
        assert http.connections == 0 and engine.activity.count == 0
        declined = await conns[0].get(f"/live/demo/{parts[0]}?arcly_session=%41{session[1:]}")
        assert status_of(declined) == 200 and http.lane_answers == answered + 120  # by the handler
        assert status_of(await conns[0].get(f"/live/demo/video.m3u8{query}")) == 200
        assert http.lane_answers == answered + 121
        await conns[1].send(*(request(f"/live/demo/{parts[0]}{query}", "HEAD") for _ in range(400)))
        heads = [await conns[1].answer(head=True) for _ in range(400)]  # served in slices
        assert {status_of(head) for head in heads} == {200} and http.lane_answers == answered + 521
        for conn in conns:
            await conn.stream.aclose()
        await wait_for(lambda: http.hub.lent == 0)


async def test_held_reloads_of_many_connections_are_answered_in_one_pass(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Ten connections' blocking reloads of the next part wait on the stream through one wait
    of the hub (the lane would wait ten times), each request in service meanwhile (the
    session in flight, the ticket busy); all are answered with the part once it is made."""
    async with llhls_server(session_hub=True) as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 1)
        await wait_for(lambda: hls.live["live/demo"].current)
        session, _ = await _session(http.port)
        query = f"arcly_session={session}"
        conns = [await RawConnection.open(http.port) for _ in range(10)]
        for conn in conns:  # lend each connection to the hub
            assert status_of(await conn.get(f"/live/demo/video.m3u8?{query}")) == 200
        video = video_of(hls)
        msn, part = video.open_sequence, len(video.open_parts)
        for conn in conns:
            await conn.send(request(f"/live/demo/video.m3u8?_HLS_msn={msn}&_HLS_part={part}&{query}"))
        await wait_for(lambda: engine.polled.get(session).in_flight == 10)
        assert hls.live["live/demo"].waiting == 1 and http.connections == 10
        async with trio.open_nursery() as nursery:

            async def publish() -> None:
                nonlocal pos
                while engine.polled.get(session).in_flight:
                    await publisher.send(frames[pos])
                    pos += 1
                    await trio.sleep(0.005)

            nursery.start_soon(publish)
            answers = [await conn.answer() for conn in conns]
        for answer in answers:
            assert status_of(answer) == 200 and f"{msn}.{part}.m4s".encode() in body_of(answer)
        assert http.connections == 0 and engine.activity.count == 0
        for conn in conns:
            await conn.stream.aclose()


async def test_the_hub_keeps_the_head_and_keep_alive_timeouts_and_a_held_reloads_deadline(
    demo_frames, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """An idle lent connection closes after ``header_timeout``, and so does one whose next head
    stays incomplete; a blocking reload whose part never comes is answered ``503`` at its
    deadline (the stream stopped publishing; the deadline made short), by the hub's timer."""
    monkeypatch.setattr(hls_routes, "block_timeout", lambda service, live: 0.5)
    async with llhls_server(session_hub=True) as (engine, http, hls), engine.publish("live/demo") as publisher:
        http.header_timeout = 0.3
        await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 1)
        await wait_for(lambda: hls.live["live/demo"].current)
        session, _ = await _session(http.port)
        target = f"/live/demo/video.m3u8?arcly_session={session}"
        idle, partial, held = [await RawConnection.open(http.port) for _ in range(3)]
        for conn in (idle, partial, held):
            assert status_of(await conn.get(target)) == 200
        await partial.send(b"GET /live/demo/video.m3u8 HTTP/1.1\r\nHost: x\r\n")
        video = video_of(hls)
        await held.send(request(f"{target}&_HLS_msn={video.open_sequence + 1}&_HLS_part=0"))
        with trio.fail_after(5):
            assert await idle.answer() == b"" and await partial.answer() == b""
        answer = await held.answer()
        assert status_of(answer) == 503 and b"retry-after: 1" in answer.lower()
        assert http.connections == 0 and engine.activity.count == 0
        for conn in (idle, partial, held):
            await conn.stream.aclose()


async def test_a_client_that_vanishes_while_its_answer_is_written(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """A client that pipelines requests for a part without reading fills its socket: the hub
    hands the connection back with the rest of the answer (written within the write timeout by
    the connection's task); when the client goes, the request ends (its accounting undone) and
    the hub serves the other connections on."""
    async with llhls_server(session_hub=True) as (engine, http, hls), engine.publish("live/demo") as publisher:
        await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 2)
        await wait_for(lambda: hls.live["live/demo"].current)
        session, parts = await _session(http.port)
        query = f"?arcly_session={session}"
        other = await RawConnection.open(http.port)
        assert status_of(await other.get(f"/live/demo/video.m3u8{query}")) == 200
        greedy = await RawConnection.open(http.port)
        assert status_of(await greedy.get(f"/live/demo/video.m3u8{query}")) == 200
        segment = f"/live/demo/{parts[0].split('.')[0]}.m4s{query}"
        if status_of(await greedy.get(segment)) != 200:
            segment = f"/live/demo/{parts[0]}{query}"
        await greedy.send(*(request(segment) for _ in range(400)))
        await wait_for(lambda: http.connections == 1)  # its task writes the rest of an answer
        greedy.stream.socket.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")  # fmt: skip
        await greedy.stream.aclose()  # a reset: the write fails
        await wait_for(lambda: http.connections == 0 and engine.activity.count == 0)
        assert engine.polled.get(session).in_flight == 0
        assert status_of(await other.get(f"/live/demo/video.m3u8{query}")) == 200
        await other.stream.aclose()


async def test_shutdown_finishes_held_requests_and_closes_idle_lent_connections(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Graceful shutdown with a reload held by the hub and an idle lent connection: the held
    request is answered (the stream ended: its final playlist, ``Connection: close``) and the
    idle connection is closed."""
    async with llhls_server(session_hub=True) as (engine, http, hls), trio.open_nursery() as nursery:

        async def publish(task_status: trio.TaskStatus[None]) -> None:
            with pytest.raises(PublishEnded):
                async with engine.publish("live/demo") as publisher:
                    await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 1)
                    task_status.started()
                    await trio.sleep_forever()

        await nursery.start(publish)
        await wait_for(lambda: hls.live["live/demo"].current)
        session, _ = await _session(http.port)
        target = f"/live/demo/video.m3u8?arcly_session={session}"
        idle, held = await RawConnection.open(http.port), await RawConnection.open(http.port)
        for conn in (idle, held):
            assert status_of(await conn.get(target)) == 200
        assert http.hub is not None
        await wait_for(lambda: http.hub.lent == 2)
        video = video_of(hls)
        await held.send(request(f"{target}&_HLS_msn={video.open_sequence + 1}&_HLS_part=0"))
        await wait_for(lambda: engine.polled.get(session).in_flight == 1)
        nursery.start_soon(engine.shutdown, 5.0)
        with trio.fail_after(4):
            answer = await held.answer()
            assert await idle.answer() == b""
        assert status_of(answer) == 200 and b"connection: close" in answer.lower()
        assert b"#EXT-X-ENDLIST" in body_of(answer)
        await idle.stream.aclose()
        await held.stream.aclose()
