"""The UDP MPEG-TS ingest worker: the URL option, unicast and multicast publishing into the
engine, the idle end and restart, foreign senders, refusals and non-TS bytes (all on loopback,
port 0, real sockets: idle timeouts are short real times, every wait is on state under a
``fail_after``)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.engine import Engine
from arcly_trio.kernel.events import StreamUnpublished
from arcly_trio.media.mpegts import TsMuxer
from arcly_trio.testing import CountingObserver
from arcly_trio.workers.http.api_routes import sessions_document
from arcly_trio.workers.udpts import UdpTsIngest, UdpTsSource, parse_ingest_udp
from tests._serving import find_stream, wait_until
from tests.media.test_ts_demux import gop_stream

KEY = StreamKey("live", "cam")
IDLE = 0.4


def test_parse_ingest_udp() -> None:
    assert parse_ingest_udp("live/cam=udp://127.0.0.1:5000") == UdpTsSource(KEY, "127.0.0.1", 5000)
    assert parse_ingest_udp("udp://0.0.0.0:1234") == UdpTsSource(StreamKey("live", "udp-1234"), "0.0.0.0", 1234)
    group = parse_ingest_udp("tv/one=udp://239.1.2.3:1234?localaddr=127.0.0.1")
    assert group == UdpTsSource(StreamKey("tv", "one"), "239.1.2.3", 1234, "127.0.0.1")
    assert group.multicast and not parse_ingest_udp("udp://127.0.0.1:1").multicast
    for bad in (
        "live/cam=rtmp://127.0.0.1:5000",
        "udp://example.com:5000",
        "udp://127.0.0.1",
        "udp://127.0.0.1:70000",
        "cam=udp://127.0.0.1:5000",
        "live/cam=udp://127.0.0.1:5000?localaddr=eth0",
    ):
        with pytest.raises(ValueError, match="--ingest-udp"):
            parse_ingest_udp(bad)


def datagrams(frames: list[Frame], shift: int = 0) -> list[bytes]:
    """The frames as MPEG-TS in 7-packet datagrams (what ffmpeg's pkt_size=1316 sends)."""
    muxer = TsMuxer("h264", "aac")
    data = muxer.header() + b"".join(muxer.mux(f.shifted(shift) if shift else f) for f in frames)
    return [data[i : i + 1316] for i in range(0, len(data), 1316)]


@asynccontextmanager
async def ingesting(
    source: UdpTsSource, **options: object
) -> AsyncIterator[tuple[Engine, UdpTsIngest, CountingObserver]]:
    worker = UdpTsIngest(source, idle=IDLE, **options)  # type: ignore[arg-type]
    observer = CountingObserver()
    async with Engine.builder().application("live").protocol(worker).observer(observer).build() as engine:
        assert worker.port and engine.worker_info[0] == worker.port
        yield engine, worker, observer


def sender() -> trio.socket.SocketType:
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


async def send_all(sock: trio.socket.SocketType, packets: list[bytes], address: tuple[str, int]) -> None:
    for packet in packets:
        await sock.sendto(packet, address)
        await trio.sleep(0.001)  # pace a little: loopback drops nothing, but the worker shares one core


def publishing(engine: Engine) -> bool:
    stream = find_stream(engine, "live/cam")
    return stream is not None and stream.publishing


def video_frames(engine: Engine) -> int:
    stream = find_stream(engine, "live/cam")
    return stream.stats().video_frames_total if stream is not None and stream.publishing else 0


async def test_unicast_publish_idle_end_restart_and_foreign_senders() -> None:
    with trio.fail_after(20):
        async with ingesting(UdpTsSource(KEY, "127.0.0.1", 0)) as (engine, worker, observer):
            address = ("127.0.0.1", worker.port or 0)
            frames = gop_stream(count=12, gop=4)
            with sender() as sock, sender() as other:
                await sock.bind(("127.0.0.1", 0))
                await send_all(sock, datagrams(frames), address)
                # The last frame is held until the next one begins: 11 of 12 so far.
                await wait_until(lambda: video_frames(engine) >= 11)
                await send_all(other, datagrams(frames), address)  # another sender: ignored
                await wait_until(lambda: worker.foreign > 0)
                session = next(s for s in sessions_document(engine)["sessions"] if s["protocol"] == "udp")
                assert session["udp"]["sender"] == f"127.0.0.1:{sock.getsockname()[1]}"
                assert session["udp"]["continuity_errors"] == 0 and session["udp"]["video"] == "h264"
                assert session["udp"]["foreign_datagrams"] == worker.foreign > 0
                assert worker.status()["publishing"]
                # Silence ends the publish after IDLE seconds ...
                await wait_until(lambda: not publishing(engine))
                ended = observer.of_type(StreamUnpublished)
                assert [(e.reason, e.protocol) for e in ended] == [("closed", "udp")]  # type: ignore[attr-defined]
                assert worker.session is None and worker.sessions_started == 1
                # The session's queued frames (the last one flushed at the idle end) are delivered
                # by the stream's task after the session ended (the unpublish comes first): wait.
                await wait_until(lambda: observer.frames[KEY] >= 2 + 12 + 12)
                assert observer.frames[KEY] == 2 + 12 + 12  # configs and every frame: the last at the idle end
                # ... and the next datagram (of any sender) starts a new one.
                await send_all(other, datagrams(frames, shift=10_000), address)
                await wait_until(lambda: video_frames(engine) >= 11)
                assert worker.sessions_started == 2


async def test_multicast_group_on_loopback() -> None:
    group = "239.255.42.7"
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
        )
    except OSError as exc:  # pragma: no cover - depends on the sandbox
        pytest.skip(f"this machine refuses a multicast join on loopback: {exc}")
    finally:
        probe.close()
    with trio.fail_after(20):
        async with ingesting(UdpTsSource(KEY, group, 0, "127.0.0.1")) as (engine, worker, _):
            with sender() as sock:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                await send_all(sock, datagrams(gop_stream(count=8)), (group, worker.port or 0))
                await wait_until(lambda: video_frames(engine) >= 7)


class Refuse:
    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> bool:
        return False

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> bool:
        return True


async def test_a_refused_sender_is_waited_out_and_non_ts_bytes_end_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(20):
        worker = UdpTsIngest(UdpTsSource(KEY, "127.0.0.1", 0), idle=IDLE)
        builder = Engine.builder().application("live").protocol(worker).authenticator(Refuse())  # type: ignore[arg-type]
        async with builder.build():
            address = ("127.0.0.1", worker.port or 0)
            with sender() as sock:
                await send_all(sock, datagrams(gop_stream(count=4)), address)
                await wait_until(lambda: worker.ignored > 0)
                assert worker.sessions_started == 0
                # One refusal logged, not one per datagram.
                assert (
                    len([r for r in caplog.records if r.name == "arcly_trio.udpts" and "ended" in r.getMessage()]) == 1
                )
    with trio.fail_after(20):
        async with ingesting(UdpTsSource(KEY, "127.0.0.1", 0)) as (engine, worker, _):
            with sender() as sock:
                for _ in range(60):  # 84 KB of zeros: past the demuxer's 64 KiB without a sync byte
                    await sock.sendto(bytes(1400), ("127.0.0.1", worker.port or 0))
                    await trio.sleep(0.001)
                await wait_until(
                    lambda: worker.ignored > 0 or any("not MPEG-TS" in r.getMessage() for r in caplog.records)
                )
            assert any("not MPEG-TS" in r.getMessage() for r in caplog.records)


async def test_a_port_in_use_raises_cannot_listen() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        worker = UdpTsIngest(UdpTsSource(KEY, "127.0.0.1", taken.getsockname()[1]), idle=IDLE)
        with trio.fail_after(10), pytest.raises(OSError, match="already in use"):
            async with Engine.builder().application("live").protocol(worker).build():
                pass  # pragma: no cover


def test_frames_reach_the_stream_kind() -> None:
    # The helper stream really has both kinds (so the tests above exercise video and audio).
    kinds = {f.kind for f in gop_stream()}
    assert kinds == {FrameKind.VIDEO, FrameKind.AUDIO}


def test_serve_options_make_one_worker_per_ingest_udp_and_refuse_bad_values() -> None:
    from arcly_trio.server.arguments import build_parser, resolve_args
    from arcly_trio.server.build import build_runtime
    from arcly_trio.server.config import ConfigError

    argv = ["serve", "--http-port", "-1", "--rtmp-port", "0", "--ingest-udp", "live/cam=udp://127.0.0.1:0"]
    argv += ["--ingest-udp", "udp://239.1.1.1:0?localaddr=127.0.0.1", "--ingest-udp-idle", "2.5"]
    engine = build_runtime(resolve_args(build_parser(), argv)).engine
    workers = [w for w in engine.workers if isinstance(w, UdpTsIngest)]
    assert [(w.source.key, w.source.multicast, w.idle) for w in workers] == [
        (KEY, False, 2.5),
        (StreamKey("live", "udp-0"), True, 2.5),
    ]
    for bad in (["--ingest-udp", "live/cam=udp://nowhere:1"], ["--ingest-udp-idle", "0"]):
        with pytest.raises(ConfigError, match="ingest-udp"):
            resolve_args(build_parser(), ["serve", *bad])


async def test_metrics_count_udp_publishes_and_ingress() -> None:
    from arcly_trio.ops.metrics import PrometheusObserver

    worker = UdpTsIngest(UdpTsSource(KEY, "127.0.0.1", 0), idle=IDLE)
    metrics = PrometheusObserver()
    with trio.fail_after(20):
        async with Engine.builder().application("live").protocol(worker).observer(metrics).build() as engine:
            text = metrics.render().decode()
            assert 'arcly_publishes_total{app="live",protocol="udp"} 0.0' in text
            assert 'arcly_ingress_bytes_total{protocol="udp"} 0.0' in text
            with sender() as sock:
                await send_all(sock, datagrams(gop_stream(count=8)), ("127.0.0.1", worker.port or 0))
                await wait_until(lambda: video_frames(engine) >= 7)
            text = metrics.render().decode()
            assert 'arcly_publishes_total{app="live",protocol="udp"} 1.0' in text
            assert 'arcly_ingress_bytes_total{protocol="udp"} 0.0' not in text
