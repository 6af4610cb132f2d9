"""RTSP (TCP interleaved) viewers for the shared harness's load generator (``rtmpload.py``).

Installed by ``benchmarks/egress.py`` into its writable copy of the harness, next to the
WebSocket-FLV shim: given ``--rtsp``, the generator's HTTP-FLV viewers (``-m N --http-port P``)
become RTSP viewers of ``rtsp://HOST:P/APP/STREAM``. Each one sends ``OPTIONS``, ``DESCRIBE``,
one ``SETUP`` per track (``RTP/AVP/TCP;unicast;interleaved=2k-2k+1``) and ``PLAY``, then reads
the ``$``-framed RTP and RTCP, counting per viewer the RTP payload bytes (the harness's
``media_bytes``, held against the FLV sample's A/V rate for ``kept_up``: RTP carries the NAL
units without FLV's 4-byte lengths and tag heads, so it is a hair under the FLV rate), packets
per track and sequence gaps (``rtp_seq_gaps``, summed as ``rtsp_seq_gaps`` in the summary).
Timing (``play_ms``, first picture, first keyframe) is the harness's: a video frame starts at a
new RTP timestamp, and it is a keyframe when its first NAL unit is an IDR, SPS or
aggregation (H.264) or an IRAP or parameter set (H.265). The video clock (from the SDP's
``rtpmap``) gives the media timestamp the harness turns into ``ts_rate``. Against 127.0.0.1 the
viewers connect from 127.0.0.2, .3, ... (:data:`PER_ADDRESS` each), since arcly-trio caps the
RTSP sessions of one client address at 64.

Plain Python on the harness's asyncio loop (no arcly-trio import: it runs on the generator's
core with the harness's interpreter). The attacker's view is the server's: this client only
reads what the server under test sends, with every head and SDP bounded (64 KiB).

Error policy: anything unexpected (a non-200 status, a head too large, a bad interleaved
frame) fails that one viewer through the harness's ``fail``, which records the reason and
aborts its connection; the run goes on.
"""

from __future__ import annotations

import sys
from typing import Any

_LIMIT = 65536
PER_ADDRESS = 50
"""RTSP viewers per loopback source address (127.0.0.2, .3, ...): under the server's per-address
session cap (64), as if the viewers came from N / 50 hosts."""


def install(harness: Any) -> None:
    """Replace the harness's HTTP-FLV viewer by :class:`RtspSub` built on its ``Sub``."""
    harness.FlvSub = make_sub(harness)


def make_sub(harness: Any) -> type:
    """The RTSP viewer class, on the harness's ``Sub`` (fields, timing, results)."""
    import asyncio

    class RtspSub(asyncio.Protocol, harness.Sub):
        kind = "rtsp"

        def __init__(self, gen: Any, idx: int) -> None:
            self.init_common(gen, idx)
            self.done = gen.loop.create_future()
            self.buf = b""
            self.cseq = 0
            self.state = "options"
            self.base = ""
            self.controls: list[tuple[str, str, int, str]] = []  # (kind, control URL, clock, codec)
            self.session = ""
            self.setups = 0
            self.playing = False
            self.kinds: dict[int, str] = {}  # RTP channel -> "video" / "audio"
            self.clock = 90000
            self.last_seq: dict[int, int] = {}
            self.gaps = 0
            self.packets = 0
            self.rtcp = 0
            self.video_ts = -1
            self.ts0: int | None = None
            self.hevc = False

        # ------------------------------------------------------------ RTSP requests

        def url(self) -> str:
            g = self.gen
            return f"rtsp://{g.host}:{g.http_port}/{g.app}/{g.stream}"

        def request(self, method: str, url: str, extra: str = "") -> None:
            self.cseq += 1
            head = f"{method} {url} RTSP/1.0\r\nCSeq: {self.cseq}\r\nUser-Agent: rtspload\r\n{extra}"
            if self.session:
                head += f"Session: {self.session}\r\n"
            self.transport.write((head + "\r\n").encode())

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.request("OPTIONS", self.url())

        def connection_lost(self, exc: Exception | None) -> None:
            self.closed_at = harness.now()
            if self.error is None and not self.gen.stopping:
                self.error = "closed by server" if exc is None else f"conn lost: {exc}"
            if not self.done.done():
                self.done.set_result(False)

        def response(self) -> bool:
            """One RTSP response from ``buf`` (True) or wait for more (False)."""
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _LIMIT:
                    self.fail("rtsp head too large")
                return False
            head = self.buf[:end].decode("latin-1").split("\r\n")
            fields = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            length = int(fields.get("content-length", "0") or 0)
            if length > _LIMIT:
                self.fail("rtsp body too large")
                return False
            if len(self.buf) < end + 4 + length:
                return False
            body = self.buf[end + 4 : end + 4 + length].decode("latin-1")
            self.buf = self.buf[end + 4 + length :]
            status = head[0].split()
            if self.playing:
                return True  # a keep-alive answer or a server message: ignored
            if len(status) < 2 or status[1] != "200":
                self.fail(f"rtsp {self.state}: {head[0][:60]}")
                return False
            self.advance(fields, body)
            return True

        def advance(self, fields: dict[str, str], body: str) -> None:
            if self.state == "options":
                self.state = "describe"
                self.request("DESCRIBE", self.url(), "Accept: application/sdp\r\n")
            elif self.state == "describe":
                self.base = fields.get("content-base", self.url() + "/").rstrip("/")
                self.controls = sdp_tracks(body, self.base)
                if not self.controls:
                    self.fail("no track in the SDP")
                    return
                self.state = "setup"
                self.setup()
            elif self.state == "setup":
                if not self.session:
                    self.session = fields.get("session", "").split(";")[0]
                self.setups += 1
                if self.setups < len(self.controls):
                    self.setup()
                else:
                    self.state = "play"
                    self.request("PLAY", self.base + "/", "Range: npt=0.000-\r\n")
            elif self.state == "play":
                self.playing = True
                self.t_playing = harness.now()
                if not self.done.done():
                    self.done.set_result(True)

        def setup(self) -> None:
            kind, url, clock, codec = self.controls[self.setups]
            channel = 2 * self.setups
            self.kinds[channel] = kind
            if kind == "video":
                self.clock = clock
                self.hevc = codec.upper() in ("H265", "HEVC")
            self.request("SETUP", url, f"Transport: RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}\r\n")

        # ------------------------------------------------------------ media

        def data_received(self, data: bytes) -> None:
            self.rx += len(data)
            buf = self.buf + data if self.buf else data
            pos, size = 0, len(buf)
            while pos < size:
                if buf[pos] != 0x24:  # an RTSP message
                    self.buf = buf[pos:]
                    if not self.response():
                        return
                    buf, pos, size = self.buf, 0, len(self.buf)
                    continue
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                if size - pos < 4 + length:
                    break
                channel = buf[pos + 1]
                if channel & 1:
                    self.rtcp += 1
                elif length >= 12:
                    self.rtp(channel, buf, pos + 4, length)
                pos += 4 + length
            self.buf = buf[pos:] if pos < size else b""

        def rtp(self, channel: int, buf: bytes, at: int, length: int) -> None:
            self.packets += 1
            seq = (buf[at + 2] << 8) | buf[at + 3]
            last = self.last_seq.get(channel)
            if last is not None and seq != ((last + 1) & 0xFFFF):
                ahead = (seq - last - 1) & 0xFFFF
                if ahead < 0x8000:
                    self.gaps += ahead
            self.last_seq[channel] = seq
            head = 12 + 4 * (buf[at] & 0x0F)
            if buf[at] & 0x10 and length >= head + 4:  # header extension
                head += 4 + 4 * ((buf[at + head + 2] << 8) | buf[at + head + 3])
            payload = length - head
            if payload <= 0:
                return
            self.media_bytes += payload
            if self.kinds.get(channel) != "video":
                self.audio_msgs += 1
                return
            ts = (buf[at + 4] << 24) | (buf[at + 5] << 16) | (buf[at + 6] << 8) | buf[at + 7]
            if ts == self.video_ts:
                return
            self.video_ts = ts
            self.video_msgs += 1
            if self.ts0 is None:
                self.ts0 = ts
            self.last_ts = ((ts - self.ts0) & 0xFFFFFFFF) * 1000 // self.clock
            if self.need_peek:
                key = self.keyframe(buf, at + head, payload)
                self.on_video_peek(0x17 if key else 0x27, 1)

        def keyframe(self, buf: bytes, at: int, size: int) -> bool:
            if self.hevc:
                kind = (buf[at] >> 1) & 0x3F
                if kind == 49 and size > 2:  # FU
                    kind = buf[at + 2] & 0x3F
                return 16 <= kind <= 21 or 32 <= kind <= 34 or kind == 48
            kind = buf[at] & 0x1F
            if kind == 28 and size > 1:  # FU-A
                kind = buf[at + 1] & 0x1F
            return kind in (5, 7, 24)

        def result(self) -> dict[str, Any]:
            out = harness.Sub.result(self)
            out.update(rtp_packets=self.packets, rtp_seq_gaps=self.gaps, rtcp_packets=self.rtcp)
            return out

    summary = harness.Gen.summary

    def with_gaps(self: Any, *args: Any) -> dict[str, Any]:
        out = summary(self, *args)
        rows = out.get("per_sub", [])
        out["rtsp_seq_gaps"] = sum(row.get("rtp_seq_gaps", 0) for row in rows)
        out["rtsp_viewers_with_gaps"] = sum(1 for row in rows if row.get("rtp_seq_gaps"))
        out["rtp_packets"] = sum(row.get("rtp_packets", 0) for row in rows)
        return out

    async def open_one(self: Any, sub: Any, port: int, sem: Any, start_at: float) -> None:
        """The harness's ``Gen.open_one``, from a loopback source address per ``PER_ADDRESS``
        viewers (arcly-trio holds at most 64 RTSP sessions per client address)."""
        delay = start_at - harness.now()
        if delay > 0:
            await asyncio.sleep(delay)
        async with sem:
            sub.t_connect = harness.now()
            local = (f"127.0.0.{2 + sub.idx // PER_ADDRESS}", 0) if self.host == "127.0.0.1" else None
            try:
                await self.loop.create_connection(lambda: sub, self.host, port, local_addr=local)
            except OSError as exc:
                sub.error = f"connect: {exc}"
                return
            try:
                await asyncio.wait_for(asyncio.shield(sub.done), self.a.connect_timeout)
            except TimeoutError:
                sub.fail(f"no play start within {self.a.connect_timeout:.0f}s")

    harness.Gen.summary = with_gaps
    harness.Gen.open_one = open_one
    return RtspSub


def sdp_tracks(sdp: str, base: str) -> list[tuple[str, str, int, str]]:
    """(kind, control URL, clock rate, codec) of each audio/video ``m=`` section of ``sdp``."""
    tracks: list[tuple[str, str, int, str]] = []
    kind = control = codec = ""
    clock = 90000
    for line in [*sdp.splitlines(), "m=end"]:
        if line.startswith("m="):
            if kind in ("video", "audio"):
                url = control if control.startswith("rtsp://") else base + "/" + control.lstrip("/")
                tracks.append((kind, url, clock, codec))
            kind, control, clock, codec = line[2:].split(" ", 1)[0], "", 90000, ""
        elif line.startswith("a=control:"):
            control = line[len("a=control:") :].strip()
        elif line.startswith("a=rtpmap:"):
            parts = line.split(" ", 1)[-1].split("/")
            codec = parts[0]
            if len(parts) > 1 and parts[1].isdigit():
                clock = int(parts[1])
    return tracks[:4]


if __name__ == "__main__":  # pragma: no cover - used through egress.py's shim
    sys.exit("imported by the harness shim of benchmarks/egress.py")
