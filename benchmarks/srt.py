"""SRT benchmark: ingest of N SRT publishers next to N RTMP publishers, and SRT play of one
stream to N viewers next to RTMP play, in the same run against the same server.

Layout (2 cores): the server (an in-process engine with RTMP and SRT on 127.0.0.1, port 0, and
a counting stream service) runs in a child process pinned to CPU 0; the publishers and viewers
run pinned to CPU 1. The server's CPU is its own ``getrusage`` (user + system) read at the
start and end of each window.

* ``ingest``: N ffmpeg (Debian's 5.1, libsrt) callers send the same clip (H.264 CBR at
  ``--bitrate`` + AAC, MPEG-TS, made once with ffmpeg and cached in ``/tmp``) with ``-re`` and
  ``-c copy`` (an ffmpeg that copies costs a few % of a core, so ffmpeg processes rather than a
  Python generator); then N ffmpeg RTMP publishers send the same clip as FLV. The window is the
  whole clip. Reported: server CPU seconds per Mbit/s of media received (frame payload bytes
  the kernel got, counted by a kernel subscription: the "player"), and the loss in that output:
  video and audio frames counted per stream against the clip's own frame counts (from the
  project's TS demuxer), plus the SRT sessions' lost/dropped packets from the server.
* ``play``: an ffmpeg RTMP publisher loops the clip into ``live/src``; a baseline window with
  no viewer; then N SRT viewers (a Python load generator on the core's caller side: the
  handshake of :mod:`arcly_trio.relay.srt_push` and :class:`SrtConnection`, which ACKs, NAKs
  and counts packets) for a window, then N RTMP viewers (the project's RTMP client counting
  frames). Reported: marginal server CPU per viewer-second ((CPU − baseline CPU) ÷ (N ×
  window)), and per viewer the packets/frames it got, min and max, and SRT loss counters.

Usage::

    python benchmarks/srt.py ingest --publishers 10 --bitrate 4M --seconds 10
    python benchmarks/srt.py play --viewers 50 --bitrate 1M --seconds 10
    python benchmarks/srt.py all --publishers 10 --viewers 50

A benchmark, not a test: it asserts nothing, it prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

HOST = "127.0.0.1"
CLIPS = Path("/tmp/arcly-srt-bench")
SERVER_CPU, LOAD_CPU = {0}, {1}
ACK_PERIOD = 0.1
"""How often a light SRT reader acknowledges."""


def pin(cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(0, cpus & os.sched_getaffinity(0) or os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass


def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        sys.exit("ffmpeg (Debian's 5.1, with libsrt) is needed")
    return path


def make_clip(bitrate: str, seconds: int) -> tuple[Path, Path]:
    """An H.264 CBR + AAC clip as MPEG-TS and as FLV (the same packets), cached."""
    CLIPS.mkdir(exist_ok=True)
    ts = CLIPS / f"clip-{bitrate}-{seconds}s.ts"
    flv = ts.with_suffix(".flv")
    if not ts.exists() or not flv.exists():
        buffer = f"{int(float(bitrate.rstrip('Mk')) * (1000 if bitrate.endswith('M') else 1)) // 2}k"
        subprocess.run(
            [ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "60",
             "-b:v", bitrate, "-minrate", bitrate, "-maxrate", bitrate, "-bufsize", buffer,
             "-x264-params", "nal-hrd=cbr", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts", str(ts)],
            check=True,
        )  # fmt: skip
        subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(ts), "-c", "copy", "-f", "flv", str(flv)], check=True)
    return ts, flv


def clip_frames(ts: Path) -> tuple[int, int]:
    from arcly_trio.core.frame import FrameKind
    from arcly_trio.media.ts_demux import TsDemuxer

    demuxer = TsDemuxer()
    frames = demuxer.feed(ts.read_bytes()) + demuxer.flush()
    media = [f for f in frames if not f.config]
    return sum(f.kind is FrameKind.VIDEO for f in media), sum(f.kind is FrameKind.AUDIO for f in media)


# ---------------------------------------------------------------------------------- the server


class Counter:
    """A stream service counting what the kernel received per stream (the benchmark's player)."""

    name = "bench-counter"
    capacity = 4096

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def applies_to(self, spec: Any) -> bool:
        return True

    async def serve_stream(self, stream: Any, subscription: Any) -> None:
        from arcly_trio.core.frame import FrameKind

        # video, audio, bytes, drops, first and last audio timestamp
        counts = self.counts.setdefault(str(stream.key), [0, 0, 0, 0, -1, -1])
        while True:
            batch = await subscription.next_batch()
            if not batch:
                break
            for frame in batch:
                if frame.config:
                    continue
                counts[0 if frame.kind is FrameKind.VIDEO else 1] += 1
                counts[2] += len(frame.payload)
                if frame.kind is not FrameKind.VIDEO:
                    counts[4] = frame.dts if counts[4] < 0 else counts[4]
                    counts[5] = frame.dts
            counts[3] = subscription.dropped


def socket_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to ``port`` (its receive buffer
    was full): the ``drops`` column of ``/proc/net/udp``."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return -1
    for line in lines:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[-1])
    return -1


async def serve() -> None:
    from arcly_trio import AppSpec, Engine
    from arcly_trio.workers.rtmp import RtmpServer
    from arcly_trio.workers.srt import SrtServer

    pin(SERVER_CPU)
    if os.environ.get("SRT_BENCH_LOG"):  # the server's log lines on stderr (why sessions ended...)
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    counter = Counter()
    rtmp = RtmpServer(HOST, 0)
    srt = SrtServer(HOST, 0, latency_ms=200, max_sessions=5000, max_sessions_per_address=5000, handshake_rate=1000)
    builder = Engine.builder().application(AppSpec("live")).protocol(rtmp).protocol(srt).service(counter)
    async with builder.build():
        print(json.dumps({"rtmp": rtmp.port, "srt": srt.port_number}), flush=True)
        stdin = trio.wrap_file(sys.stdin)
        while (line := await stdin.readline()).strip() != "quit" and line:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            try:  # run time and time spent runnable but waiting for the CPU (another process had it), ns
                waited = int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                waited = -1.0
            totals = {k: v for k, v in srt.status().items() if k != "sessions" and isinstance(v, int)}
            totals["socket_drops"] = socket_drops(srt.port_number or 0)
            print(
                json.dumps(
                    {"cpu": usage.ru_utime + usage.ru_stime, "waited": waited, "counts": counter.counts, "srt": totals}
                ),
                flush=True,
            )


# ------------------------------------------------------------------------------ the viewers


async def srt_viewer(port: int, stats: dict[str, int], ready: Any) -> None:
    """A light SRT reader: the core's caller handshake, then it reads only each datagram's
    sequence number (a gap counts as lost; no NAK, so nothing is retransmitted) and sends a
    full ACK every :data:`ACK_PERIOD` (which frees the server's send buffer and keeps the
    session alive; libsrt's 10 ms would take more CPU than the load generator's core has for
    300 readers)."""
    from arcly_trio.protocols.srt import handshake as hs
    from arcly_trio.protocols.srt.packet import Ack, ControlPacket, ControlType, seq_diff
    from arcly_trio.relay.srt_push import caller_handshake

    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    await sock.connect((HOST, port))
    caller = hs.Caller("read:live/src", latency_ms=200)
    connected, start = await caller_handshake(sock, (HOST, port), caller, 60)
    ready()
    raw = sock._sock if hasattr(sock, "_sock") else sock  # the stdlib socket: drained without a wait each
    expected = connected.isn
    packets = size = lost = ack_number = 0
    acked = expected
    next_ack = last_sent = trio.current_time()
    while True:
        with trio.move_on_at(next_ack):
            await trio.lowlevel.wait_readable(raw)
        while True:
            try:
                data = raw.recv(2048)
            except BlockingIOError:
                break
            if data[0] & 0x80:
                continue  # control: ACKACK, keepalive
            seq = int.from_bytes(data[:4], "big")
            ahead = seq_diff(seq, expected)
            if ahead < 0:
                continue
            lost += ahead
            expected = (seq + 1) & 0x7FFFFFFF
            packets += 1
            size += len(data) - 16
        now = trio.current_time()
        if now >= next_ack:
            next_ack = now + ACK_PERIOD
            if expected == acked and now - last_sent >= 0.5:  # a keepalive: the server ends a silent peer
                acked = (expected - 1) & 0x7FFFFFFF
            if expected != acked:
                last_sent = now
                acked = expected
                ack_number += 1
                body = Ack(last=expected).to_bytes()
                ack = ControlPacket(
                    ControlType.ACK, 0, ack_number, int((now - start) * 1e6), connected.peer_socket_id, body
                )
                try:
                    raw.send(ack.to_bytes())
                except BlockingIOError:
                    pass
        stats.update(packets=packets, bytes=size, lost=lost, dropped=lost)


class LightPublisher:
    """A light SRT publisher: the core's caller handshake and :class:`SrtConnection` (which
    numbers, stamps, keeps for retransmission and answers NAKs); :func:`publishers` paces
    all of them from one task."""

    def __init__(self, port: int, index: int) -> None:
        self.port = port
        self.index = index
        self.connection: Any = None
        self.sock: Any = None
        self.send_drops = 0

    async def connect(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from arcly_trio.protocols.srt import handshake as hs
        from arcly_trio.protocols.srt.connection import SrtConnection
        from arcly_trio.protocols.srt.packet import parse
        from arcly_trio.relay.srt_push import caller_handshake

        sock = self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await sock.connect((HOST, self.port))
        caller = hs.Caller(f"publish:live/s{self.index}", latency_ms=200)
        connected, now = await caller_handshake(sock, (HOST, self.port), caller, 20)
        connection = self.connection = SrtConnection(
            our_id=caller.socket_id,
            peer_id=connected.peer_socket_id,
            isn=connected.isn,
            now=now,
            peer_timestamp=connected.timestamp,
            recv_latency=connected.recv_latency_ms / 1000,
            send_latency=max(connected.send_latency_ms / 1000, 0.2),
            idle_timeout=60,
        )
        task_status.started()
        while True:  # the listener's ACKs and NAKs
            data = await sock.recv(2048)
            connection.receive(parse(data), trio.current_time())
            self.flush()

    def flush(self) -> None:
        raw = self.sock._sock if hasattr(self.sock, "_sock") else self.sock  # the stdlib socket: never waits
        out, self.connection.outgoing = self.connection.outgoing, []
        for datagram in out:
            try:
                raw.send(datagram)
            except BlockingIOError:
                self.send_drops += 1


async def publishers(port: int, count: int, clip: str, seconds: float) -> None:
    """``count`` light publishers replaying the clip's 1316-byte chunks at its own rate."""
    pin(LOAD_CPU)
    data = Path(clip).read_bytes()
    payloads = [data[offset : offset + 1316] for offset in range(0, len(data), 1316)]
    rate = len(payloads) / seconds
    senders = [LightPublisher(port, index) for index in range(count)]
    async with trio.open_nursery() as nursery:
        for sender in senders:
            await nursery.start(sender.connect)
        start = trio.current_time()
        sent = 0
        while sent < len(payloads):
            await trio.sleep(0.005)
            now = trio.current_time()
            due = min(len(payloads), int((now - start) * rate) + 1)
            for sender in senders:
                for index in range(sent, due):
                    sender.connection.send(payloads[index], now)
                sender.connection.tick(now)
                sender.flush()
            sent = due
        end = trio.current_time() + 0.5  # the NAKs of the last packets answered
        while trio.current_time() < end:
            await trio.sleep(0.01)
            for sender in senders:
                sender.connection.tick(trio.current_time())
                sender.flush()
        for sender in senders:
            sender.connection.shutdown(trio.current_time())
            sender.flush()
        late = trio.current_time() - start - seconds
        nursery.cancel_scope.cancel()
    print(
        json.dumps([
            {"packets": s.connection.stats.packets_sent, "retransmitted": s.connection.stats.retransmitted,
             "send_drops": s.send_drops, "late_s": round(late, 2)}
            for s in senders
        ]),
        flush=True,
    )  # fmt: skip


async def rtmp_viewer(port: int, stats: dict[str, int], ready: Any) -> None:
    from arcly_trio.clients import open_rtmp_player

    async with open_rtmp_player(f"rtmp://{HOST}:{port}/live/src") as player:
        ready()
        async for frame in player:
            stats["packets"] = stats.get("packets", 0) + 1
            stats["bytes"] = stats.get("bytes", 0) + len(frame.payload)


async def viewers(protocol: str, port: int, count: int) -> None:
    pin(LOAD_CPU)
    stats: list[dict[str, int]] = [{} for _ in range(count)]
    connected = 0
    all_ready = trio.Event()

    def ready() -> None:
        nonlocal connected
        connected += 1
        if connected == count:
            all_ready.set()

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(srt_viewer if protocol == "srt" else rtmp_viewer, port, stats[index], ready)
            await trio.sleep(0.01)
        await all_ready.wait()
        print(json.dumps({"ready": count}), flush=True)
        stdin = trio.wrap_file(sys.stdin)
        while (line := await stdin.readline()).strip() != "quit" and line:
            print(json.dumps(stats), flush=True)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------- the driver


class Child:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self) -> Any:
        assert self.process.stdout is not None
        return json.loads(self.process.stdout.readline())

    def ask(self) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write("mark\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def srt_received_mbit(sender: dict[str, int], after: dict[str, Any], before: dict[str, Any]) -> float:
    """SRT payload Mbit that reached the server (the light senders' packets and retransmissions
    less the server socket's drops): the CPU's denominator when loss breaks frames the kernel
    never counts."""
    if not sender:
        return 0.0
    drops = after["srt"].get("socket_drops", 0) - before["srt"].get("socket_drops", 0)
    return (sender["packets"] + sender["retransmitted"] - max(drops, 0)) * 1316 * 8 / 1e6


def on_load_cpu() -> None:
    pin(LOAD_CPU)


def ingest(server: Child, ports: dict[str, int], args: argparse.Namespace) -> None:
    ts, flv = make_clip(args.bitrate, args.seconds)
    video, audio = clip_frames(ts)
    for protocol in ("srt", "rtmp"):
        before = server.ask()
        processes = []
        for index in range(args.publishers):
            if protocol == "srt" and args.sender == "light":
                break
            if protocol == "srt":
                url = (
                    f"srt://{HOST}:{ports['srt']}?streamid=publish:live/s{index}&latency=200000&pkt_size=1316&linger=2"
                )
                out = [ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(ts)]
                out += ["-c", "copy", "-f", "mpegts", url]
            else:
                url = f"rtmp://{HOST}:{ports['rtmp']}/live/r{index}"
                out = [ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(flv)]
                out += ["-c", "copy", "-f", "flv", url]
            processes.append(subprocess.Popen(out, preexec_fn=on_load_cpu))
        started = time.monotonic()
        sender_totals: dict[str, int] = {}
        if protocol == "srt" and args.sender == "light":
            light = Child("_publishers", str(ports["srt"]), str(args.publishers), str(ts), str(args.seconds))
            sent = light.read()
            light.process.wait()
            codes = [0 if entry.get("packets") else 1 for entry in sent]
            sender_totals = {
                name: sum(entry.get(name, 0) for entry in sent) for name in ("packets", "retransmitted", "send_drops")
            } | {"late_s": sent[0]["late_s"] if sent else None}
        else:
            codes = [process.wait() for process in processes]
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # the last frames through the kernel (SRT's latency, the TS demuxer's flush)
        after = server.ask()
        prefix = "live/s" if protocol == "srt" else "live/r"
        streams = {key: value for key, value in after["counts"].items() if key.startswith(prefix)}
        got_video = sorted(value[0] for value in streams.values())
        got_audio = sorted(value[1] for value in streams.values())
        media_bytes = sum(value[2] for value in streams.values())
        cpu = after["cpu"] - before["cpu"]
        mbits = media_bytes * 8 / 1e6
        print(
            json.dumps({
                "bench": "ingest", "protocol": protocol, "publishers": args.publishers, "bitrate": args.bitrate,
                "seconds": round(elapsed, 2),
                "sender": args.sender if protocol == "srt" else "ffmpeg", "failed": sum(1 for code in codes if code),
                "server_cpu_s": round(cpu, 3), "cpu_pct": round(100 * cpu / elapsed, 1),
                "server_runqueue_wait_s": round(after["waited"] - before["waited"], 2),
                "media_mbit_per_s": round(mbits / elapsed, 2),
                "cpu_ms_per_mbit": round(1000 * cpu / mbits, 3) if mbits else None,
                **({"cpu_ms_per_received_mbit": round(1000 * cpu / received, 3)}
                   if (received := srt_received_mbit(sender_totals, after, before)) else {}),
                "clip_frames": [video, audio], "streams": len(streams),
                "video_frames_min_max": [got_video[0], got_video[-1]] if got_video else None,
                "audio_frames_min_max": [got_audio[0], got_audio[-1]] if got_audio else None,
                "frames_lost": sum(max(0, video - v) for v in got_video) + sum(max(0, audio - a) for a in got_audio)
                + (args.publishers - len(streams)) * (video + audio),
                "kernel_drops": sum(value[3] for value in streams.values()),
                "audio_ms_first_last": sorted({(value[4], value[5]) for value in streams.values()})[:2],
                **({f"srt_{name}": after["srt"][name] - before["srt"].get(name, 0)
                    for name in ("lost", "dropped", "retransmits_received", "socket_drops") if name in after["srt"]}
                   if protocol == "srt" else {}),
                **({"light_sender": sender_totals} if sender_totals else {}),
            }),
            flush=True,
        )  # fmt: skip


def play(server: Child, ports: dict[str, int], args: argparse.Namespace) -> None:
    _, flv = make_clip(args.play_bitrate, 20)
    source = [ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1"]
    source += ["-i", str(flv), "-c", "copy", "-f", "flv", f"rtmp://{HOST}:{ports['rtmp']}/live/src"]
    publisher = subprocess.Popen(source, preexec_fn=on_load_cpu)
    try:
        while "live/src" not in server.ask()["counts"]:
            time.sleep(0.2)
        time.sleep(2)
        first = server.ask()
        time.sleep(args.seconds)
        baseline = (server.ask()["cpu"] - first["cpu"]) / args.seconds
        print(json.dumps({"bench": "play", "viewers": 0, "server_cpu_pct": round(100 * baseline, 1)}), flush=True)
        for protocol in ("srt", "rtmp"):
            load = Child("_viewers", protocol, str(ports[protocol]), str(args.viewers))
            try:
                load.read()  # all connected
                time.sleep(1)
                start, stats0 = server.ask(), load.ask()
                time.sleep(args.seconds)
                end, stats1 = server.ask(), load.ask()
            finally:
                load.close()
            cpu = (end["cpu"] - start["cpu"]) / args.seconds
            pairs = list(zip(stats0, stats1, strict=True))

            def delta(name: str, pairs: list[Any] = pairs) -> list[int]:
                return [b.get(name, 0) - a.get(name, 0) for a, b in pairs]

            got = sorted(delta("packets"))
            mbit = sum(delta("bytes")) * 8 / 1e6 / args.seconds
            lost, dropped = sum(delta("lost")), sum(delta("dropped"))
            print(
                json.dumps({
                    "bench": "play", "protocol": protocol, "viewers": args.viewers, "bitrate": args.play_bitrate,
                    "window_s": args.seconds, "server_cpu_pct": round(100 * cpu, 1),
                    "cpu_ms_per_viewer_s": round(1000 * (cpu - baseline) / args.viewers, 3),
                    "units_per_viewer_s_min_max": [round(got[0] / args.seconds), round(got[-1] / args.seconds)],
                    "unit": "SRT packets" if protocol == "srt" else "frames",
                    "delivered_mbit_per_s": round(mbit, 1), "srt_lost": lost, "srt_dropped": dropped,
                    "viewers_without_packets": sum(1 for n in got if n == 0), "server_players": end["srt"].get("players"),
                }),
                flush=True,
            )  # fmt: skip
    finally:
        publisher.terminate()
        publisher.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_server":
        profile = os.environ.get("SRT_BENCH_PROFILE")  # a path: the server's cProfile goes there
        if profile:
            import cProfile

            cProfile.run("trio.run(serve)", profile)
        else:
            trio.run(serve)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_publishers":
        trio.run(publishers, int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_viewers":
        trio.run(viewers, sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("ingest", "play", "all"))
    parser.add_argument("--publishers", type=int, default=10)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--bitrate", default="4M", help="ingest clip's video bitrate (ffmpeg syntax)")
    parser.add_argument("--play-bitrate", default="1M", help="the played clip's video bitrate")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--sender", choices=("light", "ffmpeg"), default="light",
        help="SRT publishers: the project's caller replaying the clip (light) or ffmpeg -re processes",
    )  # fmt: skip
    args = parser.parse_args()
    server = Child("_server")
    try:
        ports = server.read()
        if args.what in ("ingest", "all"):
            ingest(server, ports, args)
        if args.what in ("play", "all"):
            play(server, ports, args)
    finally:
        server.close()


if __name__ == "__main__":
    main()
