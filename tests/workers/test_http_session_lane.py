"""The HTTP worker's session lane (:mod:`arcly_trio.workers.http.lane`): a live LL-HLS session's
requests answered by the HLS service's quick answerers (:mod:`arcly_trio.services._hls_lane`).

The lane must answer byte for byte what the route's handler answers, or decline (the handler then
answers): a hypothesis test sends the same requests on a connection with the lane and on one
without (``HttpServer.session_lane`` off when it opened) and compares the bytes. The
authorization reuse bound holds on the lane as on the handler (a kick: ``410``; an expired
authorization: authorized again, by the handler), and so do pipelining, ``HEAD``,
``Connection: close``, the session's accounting, blocking reloads and the keep-alive timeout.
Real sockets on 127.0.0.1, the real clock (a stream that stops publishing: nothing waits).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arcly_trio.server
from arcly_trio.core.frame import Frame
from tests._hls import uris
from tests.services.test_hls_cmaf import llhls_server, packaged, video_of, wait_for

DEMO = Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"


class RawConnection:
    """One keep-alive HTTP/1.1 connection: requests written as given, answers read whole."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, *heads: bytes) -> None:
        await self.stream.send_all(b"".join(heads))

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def answer(self, head: bool = False) -> bytes:
        """The next whole answer's bytes (``head``: to a ``HEAD``, no body); ``b""`` at EOF."""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in self.buffer:
                if not await self._fill():
                    return b""
            end = self.buffer.index(b"\r\n\r\n") + 4
            length = 0
            for line in self.buffer[:end].split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            total = end + (0 if head else length)
            while len(self.buffer) < total:
                if not await self._fill():
                    return b""
            whole, self.buffer = self.buffer[:total], self.buffer[total:]
            return whole

    async def get(self, target: str, method: str = "GET", extra: bytes = b"") -> bytes:
        await self.send(request(target, method, extra))
        return await self.answer(method == "HEAD")


def request(target: str, method: str = "GET", extra: bytes = b"") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + extra + b"\r\n"


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


async def _session(port: int) -> tuple[str, list[str]]:
    """A session begun by the entry playlist; its id and the video playlist's part URIs."""
    conn = await RawConnection.open(port)
    entry = await conn.get("/live/demo/index.m3u8")
    video = next(uri for uri in uris(body_of(entry)) if uri.startswith("video.m3u8"))
    session = video.partition("arcly_session=")[2]
    listed = body_of(await conn.get(f"/live/demo/{video}")).decode()
    parts = [line.split('URI="')[1].split('"')[0] for line in listed.splitlines() if line.startswith("#EXT-X-PART:")]
    await conn.stream.aclose()
    return session, [uri.partition("?")[0] for uri in parts]


def _pairs(session: str, msns: list[int]) -> st.SearchStrategy[list[tuple[str, str]]]:
    pair = st.one_of(
        st.just(("arcly_session", session)),
        st.just(("arcly_session", "%41" + session[1:])),  # decodes to another id's text: the handler
        st.tuples(
            st.sampled_from(["_HLS_msn", "_HLS_part"]),
            st.sampled_from([*(str(m) for m in msns), "0", "x", "", "99999", "007"]),
        ),  # fmt: skip
        st.tuples(st.sampled_from(["_HLS_skip", "token", "a", "_HLS_other"]), st.sampled_from(["YES", "v2", "1", ""])),
    )
    return st.lists(pair, max_size=4)


def _targets(session: str, parts: list[str], msns: list[int]) -> st.SearchStrategy[tuple[str, str]]:
    names = st.sampled_from(["video.m3u8", "audio.m3u8", "index.m3u8", *parts, "nope-1.m4s", "x.txt", "video.m3u8/"])
    prefix = st.sampled_from(["/live/demo/", "/live/demo/", "/live/other/", "/Live/demo/", "/live/de%6Do/", "/live/./"])

    def build(prefix: str, name: str, pairs: list[tuple[str, str]], keep: bool, method: str) -> tuple[str, str]:
        # a playlist request without the id begins a session of its own (another id each time)
        keep = keep or name.endswith(".m3u8") or "arcly_session" not in dict(pairs)
        pairs = [("arcly_session", session), *pairs] if keep else pairs
        query = "&".join(f"{k}={v}" for k, v in pairs)
        return method, f"{prefix}{name}" + (f"?{query}" if query or not keep else "")

    return st.builds(build, prefix, names, _pairs(session, msns), st.booleans(), st.sampled_from(["GET", "HEAD"]))


def _closes(answer: bytes) -> bool:
    return not answer or b"\r\nconnection: close\r\n" in answer.partition(b"\r\n\r\n")[0].lower() + b"\r\n"


def _demo_frames() -> list[Frame]:
    from arcly_trio.media import flv

    return flv.read_frames(DEMO.read_bytes())


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_lane_answers_byte_identically_to_the_handlers_or_declines(data: Any) -> None:
    """Any sequence of requests of a session (its playlists and parts with directives that are
    ready, too far or malformed, other parameters, encoded ids, other paths, ``HEAD``) is
    answered with the same bytes on a connection with the lane as on one without; the lane
    answers some of them. Mutants killed: a lane answer without the CORS header, or with the
    session's query left out of the playlist's URIs."""
    equivalence(data, hub=False)


def equivalence(data: Any, *, hub: bool) -> None:
    """The lane's equivalence test, its connections served by the session hub or not."""
    demo_frames = _demo_frames()

    async def main() -> None:
        async with llhls_server(session_hub=hub) as (engine, http, hls), engine.publish("live/demo") as publisher:
            await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 2)
            await wait_for(lambda: hls.live["live/demo"].current)
            session, parts = await _session(http.port)
            video = video_of(hls)
            msns = [video.segments[0].sequence, video.segments[-1].sequence, video.open_sequence or 0]
            before = http.lane_answers
            lane = await RawConnection.open(http.port)
            http.session_lane = False
            plain = await RawConnection.open(http.port)
            http.session_lane = True
            first = f"/live/demo/video.m3u8?arcly_session={session}"
            steps = [("GET", first), *data.draw(st.lists(_targets(session, parts, msns), min_size=5, max_size=25))]
            for method, target in steps:
                expected = await plain.get(target, method)
                got = await lane.get(target, method)
                assert got == expected, (method, target)
                if _closes(expected):
                    await lane.stream.aclose()
                    await plain.stream.aclose()
                    lane = await RawConnection.open(http.port)
                    http.session_lane = False
                    plain = await RawConnection.open(http.port)
                    http.session_lane = True
            assert http.lane_answers > before
            if hub:
                assert http.hub is not None and http.hub.wakes > 0
            await lane.stream.aclose()
            await plain.stream.aclose()

    trio.run(main)


async def test_a_kick_or_an_expired_authorization_takes_the_sessions_requests_off_the_lane(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """A session's authorization is reused on the lane only while it holds: once its
    ``valid_until`` passed, its next request (same connection) is authorized again by the
    handler; once kicked, it is answered ``410``. Mutant killed: the lane without the
    ``valid_until`` check (it answered the request itself)."""
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 1)
        await wait_for(lambda: hls.live["live/demo"].current)
        session, _ = await _session(http.port)
        conn = await RawConnection.open(http.port)
        target = f"/live/demo/video.m3u8?arcly_session={session}"
        answered = http.lane_answers
        assert status_of(await conn.get(target)) == 200 and http.lane_answers == answered + 1
        engine.polled.get(session).valid_until = time.time() - 1
        assert status_of(await conn.get(target)) == 200 and http.lane_answers == answered + 1  # the handler's
        assert engine.polled.get(session).valid_until > time.time()  # authorized again
        assert status_of(await conn.get(target)) == 200 and http.lane_answers == answered + 2
        assert engine.sessions.kick(session) is not None
        assert status_of(await conn.get(target)) == 410 and http.lane_answers == answered + 2


async def test_pipelined_requests_head_and_connection_close_on_the_lane(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Three pipelined requests in one packet (a playlist, ``HEAD`` and ``GET`` of a part) are
    answered in order by the lane, the ``HEAD`` with the ``GET``'s length and no body, and
    counted in the session (requests and bytes); a request with ``Connection: close`` goes
    to the handler, which closes."""
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 1)
        await wait_for(lambda: hls.live["live/demo"].current)
        session, parts = await _session(http.port)
        polled = engine.polled.get(session)
        requests, sent = polled.requests, polled.bytes
        conn = await RawConnection.open(http.port)
        query = f"?arcly_session={session}"
        answered = http.lane_answers
        await conn.send(request(f"/live/demo/video.m3u8{query}"), request(f"/live/demo/{parts[0]}{query}", "HEAD"),
                        request(f"/live/demo/{parts[0]}{query}"))  # fmt: skip
        listed, head, part = await conn.answer(), await conn.answer(head=True), await conn.answer()
        assert [status_of(a) for a in (listed, head, part)] == [200, 200, 200]
        assert head == part.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" and body_of(part)
        assert http.lane_answers == answered + 3
        assert polled.requests == requests + 3 and polled.bytes == sent + len(body_of(listed)) + 2 * len(body_of(part))
        closing = await conn.get(f"/live/demo/{parts[0]}{query}", extra=b"Connection: close\r\n")
        assert status_of(closing) == 200 and b"connection: close" in closing.lower()
        assert http.lane_answers == answered + 3
        assert await conn.answer() == b""  # closed


async def test_a_blocking_reload_waits_on_the_lane_and_the_connection_then_times_out_idle(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """A blocking reload of the next part, on the lane, is answered once the part is made (a
    request being served: the session is in flight meanwhile); the idle keep-alive connection
    then closes after ``header_timeout``."""
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        http.header_timeout = 0.5
        frames, pos = await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).segments) >= 1)
        await wait_for(lambda: hls.live["live/demo"].current)
        session, _ = await _session(http.port)
        video = video_of(hls)
        msn, part = video.open_sequence, len(video.open_parts)
        conn = await RawConnection.open(http.port)
        answered = http.lane_answers
        await conn.send(request(f"/live/demo/video.m3u8?_HLS_msn={msn}&_HLS_part={part}&arcly_session={session}"))
        await wait_for(lambda: hls.live["live/demo"].waiting == 1)
        assert engine.polled.get(session).in_flight == 1
        async with trio.open_nursery() as nursery:

            async def publish() -> None:
                nonlocal pos
                while hls.live["live/demo"].waiting:
                    await publisher.send(frames[pos])
                    pos += 1
                    await trio.sleep(0.005)

            nursery.start_soon(publish)
            answer = await conn.answer()
        assert status_of(answer) == 200 and f"{msn}.{part}.m4s".encode() in body_of(answer)
        assert http.lane_answers == answered + 1 and engine.polled.get(session).in_flight == 0
        with trio.fail_after(5):
            assert await conn.answer() == b""  # the keep-alive timeout closed it
