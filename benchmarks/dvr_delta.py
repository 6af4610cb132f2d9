#!/usr/bin/env python3
"""LL-HLS delta updates of a DVR window: what a reload costs with and without ``_HLS_skip=YES``.

In-process, sans-IO: the demo clip (looped, continuous timestamps) goes through a
:class:`~arcly_trio.media.cmaf.CmafPackager` with a DVR window of ``--hours`` (2 s segments,
1/3 s parts) until the window is full; then, for ``--changes`` more pushes that change the
lists (a part or a segment each), it renders the video playlist the way
:class:`~arcly_trio.services._hls_cmaf.CmafPackaging` does (the full one from its
:class:`~arcly_trio.media.llhls.SegmentMemo`, and the delta update), and cuts each where a
player's query goes. One JSON line per run: the bytes of a full reload and of a delta reload,
their ratio, the CPU ms per change to render (and cut) the full playlist and the delta, and the
CPU µs per request to join the cut pieces with a session query (``time.process_time``).

Run: ``python benchmarks/dvr_delta.py --hours 6 --runs 3``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arcly_trio.core.frame import Frame, FrameKind  # noqa: E402
from arcly_trio.media import flv, llhls  # noqa: E402
from arcly_trio.media.cmaf import CmafPackager  # noqa: E402
from arcly_trio.services._hls_dvr import QueryPieces  # noqa: E402

DEMO = ROOT / "arcly_trio" / "server" / "assets" / "demo.flv"
QUERY = b"?token=abc&arcly_session=0123456789abcdef"


def frames_forever(frames: list[Frame]):  # type: ignore[no-untyped-def]
    media = [f for f in frames if not f.config]
    yield from (f for f in frames if f.config)
    span = media[-1].dts - media[0].dts + 40
    offset = 0
    while True:
        for f in media:
            yield Frame(f.kind, f.codec, f.pts + offset, f.dts + offset, f.payload, f.keyframe, f.config, f.track)
        offset += span


def run(hours: float, changes: int) -> dict[str, float]:
    window = int(hours * 3600 / 2)
    packager = CmafPackager(2.0, 1 / 3, window, name_prefix="t-")
    source = frames_forever(flv.read_frames(DEMO.read_bytes()))
    video = FrameKind.VIDEO
    while len(packager.renditions[video].segments) < window if video in packager.renditions else True:
        frame = next(source)
        packager.push(frame, 1e9 + frame.dts / 1000)
    memo, full_cut, delta_cut = llhls.SegmentMemo(), QueryPieces(), QueryPieces()
    full = llhls.media_playlist(packager, video, low_latency=True, memo=memo, deltas=True)
    full_cpu = delta_cpu = join_full = join_delta = 0.0
    full_bytes = delta_bytes = 0
    done = 0
    while done < changes:
        version = packager.version
        frame = next(source)
        packager.push(frame, 1e9 + frame.dts / 1000)
        if packager.version == version:
            continue
        done += 1
        start = time.process_time()
        full = llhls.media_playlist(packager, video, low_latency=True, memo=memo, deltas=True)
        data = full.encode()
        full_cut.cut(full, data, memo.run)
        middle = time.process_time()
        delta = llhls.media_playlist(packager, video, low_latency=True, deltas=True, skip=True)
        delta_data = delta.encode()
        delta_cut.cut(delta, delta_data, "")
        end = time.process_time()
        full_cpu += middle - start
        delta_cpu += end - middle
        start = time.process_time()
        full_bytes += len(QUERY.join(full_cut.pieces))
        middle = time.process_time()
        delta_bytes += len(QUERY.join(delta_cut.pieces))
        end = time.process_time()
        join_full += middle - start
        join_delta += end - middle
    return {
        "hours": hours,
        "segments": window,
        "changes": changes,
        "full_reload_bytes": full_bytes // changes,
        "delta_reload_bytes": delta_bytes // changes,
        "bytes_ratio": round(full_bytes / delta_bytes, 1),
        "full_render_ms_per_change": round(full_cpu * 1000 / changes, 3),
        "delta_render_ms_per_change": round(delta_cpu * 1000 / changes, 3),
        "full_join_us_per_request": round(join_full * 1e6 / changes, 1),
        "delta_join_us_per_request": round(join_delta * 1e6 / changes, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=6)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.runs):
        print(json.dumps(run(args.hours, args.changes)), flush=True)


if __name__ == "__main__":
    main()
