"""Ingest benchmark: the server's CPU time per published frame, in-process, through the real
publish path of ``/ingest`` publishers.

N publishers each send the demo clip (640x360 H.264 + AAC, 30 fps, ``arcly_trio.testing.frames.
real_stream``) as ``arcly.frames.v1`` WebSocket messages: each tick's frames (a video frame and
the audio due with it) are masked WebSocket frames, parsed by the server's
:class:`~arcly_trio.protocols.http.ws_reader.WebSocketReader` (``--parser wsproto``: by wsproto's
``Connection``, as before 2026-12) and the
:class:`~arcly_trio.protocols.frames.reader.FramesReader` as ``/ingest`` does, then sent to an
engine with the HLS service (LL-HLS, as ``serve --hls``) and, with ``--record``, the recorder
(fMP4 into a temporary directory). Ticks are not paced by the clock: each publisher sends one
tick, then lets the others run (``trio.sleep(0)``), so the scheduler sees what it sees in real
time (a tick per publisher per step) without waiting for it. What it measures is the
process's CPU time per frame (``resource``), setup excluded, so other processes on a shared
machine change it little; ``frames_per_core_s`` is its inverse.

Printed (one JSON line on stdout): the parser, frames, ``cpu_us_per_frame``, ``frames_per_core_s``.
``--parse-only`` measures the WebSocket parsing alone instead: the clip's masked frames read by
wsproto and by the server's reader, alternated 7 times in the same run, the best CPU time per
message of each and their ratio. ``--turns`` measures a publisher's reads through the server's
``ws_egress`` (over an in-memory stream: a video frame and two audio frames per read, three
``receive_message`` calls) with ``MESSAGES_PER_TURN`` 2 and 4, alternated in one run.

Usage::

    python benchmarks/ingest.py                    # 100 publishers, 20 s of media each
    python benchmarks/ingest.py --record --streams 50 --seconds 10
    python benchmarks/ingest.py --record --parser wsproto   # the same with wsproto, to compare
    python benchmarks/ingest.py --parse-only                # the parsers alone, side by side
    python benchmarks/ingest.py --turns                     # ws_egress reads, 2 or 4 messages a turn

This is a benchmark, not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arcly_trio.core.frame import Frame  # noqa: E402
from arcly_trio.kernel.engine import Engine  # noqa: E402
from arcly_trio.kernel.spec import AppSpec  # noqa: E402
from arcly_trio.protocols.frames.messages import config_for_frame, encode_frame, encode_text  # noqa: E402
from arcly_trio.protocols.frames.reader import FramesReader  # noqa: E402
from arcly_trio.protocols.http.ws_reader import Received, WebSocketReader  # noqa: E402
from arcly_trio.services.hls import HlsService  # noqa: E402
from arcly_trio.services.recordings import Recorder  # noqa: E402
from arcly_trio.testing.frames import real_stream  # noqa: E402


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client's WebSocket frame (masked with a zero key: the bytes stay as they are)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + bytes(4) + payload


def ticks(seconds: float) -> tuple[list[bytes], list[bytes], int]:
    """The clip as WebSocket bytes: the configs (text + record), then one ``bytes`` per video
    frame (it and the audio before the next one); and how many media frames in all."""
    head: list[bytes] = []
    out: list[bytes] = []
    tick = b""
    frames = 0
    for frame in real_stream():
        if frame.is_metadata:
            continue
        if frame.config:
            if not out and not tick:
                head.append(_masked(1, encode_text(config_for_frame(frame)).encode()) + _masked(2, encode_frame(frame)))
            continue
        if frame.dts > seconds * 1000:
            break
        if frame.kind.value == "video" and tick:
            out.append(tick)
            tick = b""
        tick += _masked(2, encode_frame(frame))
        frames += 1
    out.append(tick)
    return head, out, frames


async def publish(engine: Engine, key: str, head: list[bytes], body: list[bytes], parser: str) -> None:
    if parser == "arcly":
        await publish_read_by_arcly(engine, key, head, body)
        return
    ws = Connection(ConnectionType.SERVER)
    reader = FramesReader("publisher")
    async with engine.publish(key) as publisher:
        for data in [*head, *body]:
            ws.receive_data(data)
            for event in ws.events():
                assert isinstance(event, BytesMessage) or hasattr(event, "data")
                message = event.data
                found = reader.receive_text(message) if isinstance(message, str) else [reader.receive_binary(message)]
                for item in found:
                    if isinstance(item, Frame):
                        await publisher.send(item)
            await trio.sleep(0)


async def publish_read_by_arcly(engine: Engine, key: str, head: list[bytes], body: list[bytes]) -> None:
    ws = WebSocketReader()
    reader = FramesReader("publisher")
    async with engine.publish(key) as publisher:
        for data in [*head, *body]:
            ws.feed(data)
            while (event := ws.next_event()) is not None:
                assert isinstance(event, Received) and event.message_finished
                message = event.data
                found = reader.receive_text(message) if isinstance(message, str) else [reader.receive_binary(message)]
                for item in found:
                    if isinstance(item, Frame):
                        await publisher.send(item)
            await trio.sleep(0)


def parse_only(seconds: float, repeat: int = 7) -> dict[str, Any]:
    """The WebSocket parsing of ``seconds`` of the clip alone, wsproto against the server's
    reader, alternated ``repeat`` times (CPU time, the best of each)."""
    head, body, _ = ticks(seconds)
    stream = [*head, *body]

    def by_wsproto() -> int:
        connection = Connection(ConnectionType.SERVER)
        count = 0
        for data in stream:
            connection.receive_data(data)
            for _ in connection.events():
                count += 1
        return count

    def by_arcly() -> int:
        reader = WebSocketReader()
        count = 0
        for data in stream:
            reader.feed(data)
            while reader.next_event() is not None:
                count += 1
        return count

    messages = by_wsproto()
    assert by_arcly() == messages
    best = {"wsproto": float("inf"), "arcly": float("inf")}
    for _ in range(repeat):
        for name, parse in (("wsproto", by_wsproto), ("arcly", by_arcly)):
            start = time.process_time()
            parse()
            best[name] = min(best[name], time.process_time() - start)
    return {
        "benchmark": "ingest-parse",
        "messages": messages,
        "wsproto_us_per_message": round(best["wsproto"] / messages * 1e6, 2),
        "arcly_us_per_message": round(best["arcly"] / messages * 1e6, 2),
        "ratio": round(best["arcly"] / best["wsproto"], 3),
    }


async def turns(reads: int = 20000, repeat: int = 6) -> dict[str, Any]:
    """CPU per read of one tick through ``ws_egress``, ``MESSAGES_PER_TURN`` 2 against 4."""
    import trio.testing
    import wsproto
    from wsproto.events import Request

    from arcly_trio.protocols.http.websocket import WebSocketLimits
    from arcly_trio.workers.egress import Egress
    from arcly_trio.workers.http import ws_egress

    tick = _masked(2, b"v" * 4000) + _masked(2, b"a" * 300) * 2
    kept = ws_egress.MESSAGES_PER_TURN
    best = {2: float("inf"), 4: float("inf")}
    for _ in range(repeat):
        for per_turn in best:
            ws_egress.MESSAGES_PER_TURN = per_turn
            server_side, client_side = trio.testing.memory_stream_pair()
            client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            ws = ws_egress.accept(
                Egress(server_side, write_timeout=5),
                client.send(Request(host="x", target="/")),
                [],
                subprotocol=None,
                limits=WebSocketLimits(1 << 20),
            )
            start = time.process_time()
            for _ in range(reads):
                await client_side.send_all(tick)
                for _ in range(3):
                    await ws.receive_message()
            best[per_turn] = min(best[per_turn], time.process_time() - start)
    ws_egress.MESSAGES_PER_TURN = kept
    return {
        "benchmark": "ingest-turns",
        "reads": reads,
        "us_per_read_2_per_turn": round(best[2] / reads * 1e6, 2),
        "us_per_read_4_per_turn": round(best[4] / reads * 1e6, 2),
    }


async def run(streams: int, seconds: float, record: bool, directory: Path, parser: str = "arcly") -> dict[str, Any]:
    head, body, per_stream = ticks(seconds)
    builder = Engine.builder().application(AppSpec("live", hls=True, record=record, ingest_queue=256))
    builder.service(HlsService())
    if record:
        builder.service(Recorder(directory))
    engine = builder.build()
    async with engine:
        gc.collect()  # as ``arcly-trio serve`` does once started
        gc.freeze()
        before = resource.getrusage(resource.RUSAGE_SELF)
        async with trio.open_nursery() as nursery:
            for n in range(streams):
                nursery.start_soon(publish, engine, f"live/s{n}", head, body, parser)
        await trio.sleep(0.5)  # the services take in what is queued
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    frames = streams * per_stream
    return {
        "benchmark": "ingest" + ("-record" if record else ""),
        "parser": parser,
        "streams": streams,
        "frames": frames,
        "cpu_s": round(cpu, 2),
        "cpu_us_per_frame": round(cpu / frames * 1e6, 1),
        "frames_per_core_s": round(frames / cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--record", action="store_true", help="record every stream too (fMP4, temporary directory)")
    parser.add_argument(
        "--parser",
        choices=["arcly", "wsproto"],
        default="arcly",
        help="what reads the WebSocket frames: the server's reader (default) or wsproto's Connection",
    )
    parser.add_argument("--parse-only", action="store_true", help="measure the WebSocket parsers alone, side by side")
    parser.add_argument("--turns", action="store_true", help="measure ws_egress reads, 2 or 4 messages a turn")
    args = parser.parse_args()
    if args.turns:
        print(json.dumps(trio.run(turns)))
        return
    if args.parse_only:
        print(json.dumps(parse_only(args.seconds)))
        return
    with tempfile.TemporaryDirectory() as directory:
        result = trio.run(run, args.streams, args.seconds, args.record, Path(directory), args.parser)
    result.update(
        {
            "python": platform.python_version(),
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
