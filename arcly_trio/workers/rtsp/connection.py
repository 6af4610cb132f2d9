"""One RTSP connection: its requests, at most one session (play or record), its RTP.

The connection's task reads the socket through the connection's
:class:`~arcly_trio.workers.egress.Egress` (so a player's queued RTP drains in the same task),
feeds the sans-IO :class:`~arcly_trio.protocols.rtsp.messages.RtspReader`, and answers each
request in order:

* ``OPTIONS``, ``GET_PARAMETER``/``SET_PARAMETER`` (keep-alives), ``PAUSE`` (accepted, no-op);
* play: ``DESCRIBE`` attaches an :class:`~.play.RtspSink` to the stream through
  ``engine.attach`` (the one authorization path, action ``play``) and answers the SDP of its
  configs; ``SETUP`` of each track (TCP interleaved, or UDP from the server's range to the
  client's own address); ``PLAY`` starts the sink at a keyframe;
* record: ``ANNOUNCE`` reads the SDP and publishes through ``engine.publish`` (action
  ``publish``); ``SETUP`` of each track; ``RECORD`` starts taking its RTP: interleaved packets
  or datagrams, depacketized (the WebRTC payload formats, and :mod:`~arcly_trio.protocols.webrtc.payload.aac`)
  into frames with their configs;
* ``TEARDOWN`` answers and closes.

Credentials: the URL's query (``?token=``, signed URLs) and an ``Authorization`` header:
``Basic`` (the password is the token) or ``Digest`` (RFC 7616, MD5 or SHA-256) when the
engine's authenticator is a :class:`~arcly_trio.kernel.auth.TokenAuthenticator` whose token the
digest can be checked against. A refusal is a 401 with the challenges.

Timing: a request head must arrive whole within ``head_timeout`` of its first byte (slowloris);
a session ends ``session_timeout`` seconds after the last request (or RTCP from a UDP client);
a connection that does neither publish nor play within ``setup_timeout`` is closed.

Error policy: what the client sends wrong is answered with an RTSP status (400 for malformed,
454 for a wrong session, 455 for a method out of order, 461 for a transport we do not take)
and, for a malformed message, the connection closes after that answer; the reasons are raised
as :class:`CloseConnection` / :class:`Refused` for the server to log (peer text escaped).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from arcly_trio.core.errors import (
    AppNotFound,
    ArclyError,
    EngineClosed,
    InvalidStreamName,
    PublisherLimitReached,
    RemoteProtocolError,
    StreamAlreadyPublishing,
    StreamNotFound,
    Unauthorized,
)
from arcly_trio.core.excgroups import unwrap_single
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.kernel.publish import Publisher
from arcly_trio.protocols.rtsp.messages import (
    Interleaved,
    RtspError,
    RtspReader,
    RtspRequest,
    encode_response,
)
from arcly_trio.protocols.rtsp.sdp import SdpError, SdpTrack, build_sdp, describe_track, parse_sdp
from arcly_trio.protocols.rtsp.transport import TransportError, TransportSpec, format_transport, parse_transport
from arcly_trio.protocols.webrtc import rtcp
from arcly_trio.protocols.webrtc.payload import aac, h264, h265, opus
from arcly_trio.protocols.webrtc.payload import av1 as av1_payload
from arcly_trio.protocols.webrtc.rtp import RtpError, RtpPacket, parse_rtp
from arcly_trio.workers.egress import Egress
from arcly_trio.workers.rtsp.play import MODULES, OutTrack, RtspSink
from arcly_trio.workers.rtsp.udp import UdpPair, UdpPorts
from arcly_trio.workers.webrtc.ingest import InTrack

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.workers.admission import Ticket

__all__ = ["CloseConnection", "Refused", "RtspConnection", "MAX_TRACKS"]

log = logging.getLogger("arcly_trio.rtsp")

MAX_TRACKS = 4
"""Tracks one session may set up (and publish): two interleaved channels each."""
DESCRIBE_WAIT = 3.0
"""Seconds a DESCRIBE waits for a just-published stream's configs."""
_PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER, ANNOUNCE, RECORD"
_REALM = "arcly-trio"
_DEPACKETIZERS: dict[str, Any] = {
    "h264": h264.Depacketizer,
    "hevc": h265.H265Depacketizer,
    "av1": av1_payload.Av1Depacketizer,
    "aac": aac.Depacketizer,
    "opus": opus.Depacketizer,
}


class RtspHost(Protocol):
    """What a connection needs of its server (:class:`~.server.RtspServer`)."""

    name: str
    head_timeout: float
    setup_timeout: float
    session_timeout: float
    write_timeout: float
    udp: UdpPorts | None
    connections: int
    max_sessions_per_address: int | None
    sessions_per_address: dict[str, int]

    def publishing(self, connection: RtspConnection) -> None: ...

    def unpublishing(self, connection: RtspConnection) -> None: ...


class CloseConnection(ArclyError):
    """The connection ends (a protocol error, a timeout): the reason is logged."""


class Refused(ArclyError):
    """A play or publish was refused (answered already); ``authorization`` for a 401/403."""

    def __init__(self, reason: str, *, authorization: bool = False) -> None:
        super().__init__(reason)
        self.authorization = authorization


class _Answer(Exception):
    """Answer the current request with ``status`` (and ``headers``) and go on."""

    def __init__(self, status: int, reason: str = "", headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = tuple(headers)


def stream_key(uri: str) -> tuple[StreamKey, dict[str, str], str]:
    """The stream an RTSP URL names, its query, and what follows the stream name (a track's
    control). ``InvalidStreamName``/``ValueError`` for a URL that names none."""
    if uri.startswith("/"):
        uri = "rtsp://localhost" + uri
    parts = urlsplit(uri)
    path = unquote(parts.path)
    query_text = parts.query
    rest = ""
    if "/" in query_text:  # ffmpeg appends a track's control after the query
        query_text, rest = query_text.split("/", 1)
    segments = [segment for segment in path.split("/") if segment]
    if len(segments) < 2:
        raise ValueError("the URL names no app/stream")
    if len(segments) > 2:
        rest = "/".join(segments[2:]) + ("/" + rest if rest else "")
    query = dict(parse_qsl(query_text, keep_blank_values=True)[:32])
    return StreamKey(segments[0], segments[1]), query, rest


class InRecordTrack:
    """A published track: as announced, its channel or UDP pair, the depacketizing state."""

    def __init__(self, sdp: SdpTrack, state: InTrack) -> None:
        self.sdp = sdp
        self.state = state
        self.channel: int | None = None
        self.udp: UdpPair | None = None
        self.setup = False
        self.seeded = False


class RtspConnection:
    """One RTSP client connection (see the module docstring)."""

    def __init__(self, server: RtspHost, engine: Engine, stream: trio.abc.Stream, peer: tuple[str, int]) -> None:
        self.server = server
        self.engine = engine
        self.stream = stream
        self.peer = peer
        self.ticket: Ticket | None = None
        self.reader = RtspReader(role="server")
        self.events: deque[RtspRequest | Interleaved | Any] = deque()
        self.egress = Egress(stream, write_timeout=server.write_timeout)
        self.session_id: str | None = None
        self.mode: str | None = None  # "play" or "record" once DESCRIBE/ANNOUNCE succeeded
        self.key: StreamKey | None = None
        self.sink: RtspSink | None = None
        self.attached: Any = None
        self.playing = False
        self.pending_publish: tuple[StreamKey, Credentials, str] | None = None
        self.publisher: Publisher | None = None
        self.recording = False
        self.in_tracks: list[InRecordTrack] = []
        self.pairs: list[UdpPair] = []
        self.busy = False
        self.nonce = secrets.token_hex(16)
        self.holds_session = False
        self.last_activity = trio.current_time()
        self.setup_deadline = trio.current_time() + server.setup_timeout
        self.epoch: float | None = None
        self.config_arrived = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.frames_in = 0

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        try:
            with unwrap_single():
                await self._run()
        finally:
            await self._cleanup()

    async def _run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._reports)
            while await self._loop():
                if await self._publish_session():
                    break
            nursery.cancel_scope.cancel()

    async def _publish_session(self) -> bool:
        """Publish what ANNOUNCE described for as long as the connection lasts (the engine's
        ``publish`` block wraps the rest of the connection: the answer to ANNOUNCE, SETUP,
        RECORD and the media). False when it was refused for its credentials (answered 401:
        the client may try again on this connection, as ffmpeg does)."""
        pending = self.pending_publish
        assert pending is not None
        key, credentials, cseq = pending
        headers = [("CSeq", cseq), ("Server", "arcly-trio")]
        try:
            async with self.engine.publish(key, credentials, protocol=self.server.name) as publisher:
                self.publisher = publisher
                self.key = publisher.key
                self.mode = "record"
                self._new_session()
                headers.append(("Session", f"{self.session_id};timeout={int(self.server.session_timeout)}"))
                self.egress.send(encode_response(200, None, headers))
                try:
                    with unwrap_single():
                        async with trio.open_nursery() as nursery:
                            self.nursery = nursery
                            await self._loop()
                            nursery.cancel_scope.cancel()
                finally:
                    if self.recording:
                        self.server.unpublishing(self)
                        log.info(
                            "%s %s:%s stopped publishing %s (%d RTP packets lost, %d reordered)",
                            self.server.name,
                            *self.peer,
                            self.key,
                            self.packets_lost,
                            self.packets_reordered,
                        )
                    self.publisher = None
            return True
        except InvalidStreamName:
            status, reason = 400, "bad stream name"
        except Unauthorized as exc:
            log.debug("%s %s:%s %s", self.server.name, *self.peer, exc)
            self.egress.send(encode_response(401, None, headers + self._challenges()))
            self.pending_publish = None
            self.in_tracks = []
            return False
        except (StreamAlreadyPublishing, PublisherLimitReached) as exc:
            status, reason = 503, str(exc)
        except (AppNotFound, EngineClosed) as exc:
            status, reason = 404, str(exc)
        self.egress.send(encode_response(status, None, headers))
        await self.egress.drain()
        raise Refused(f"publish of {key} refused: {printable(reason)}")

    def _deadline(self) -> float:
        if self.reader.in_message:
            return self.message_started + self.server.head_timeout
        if self.playing and self.sink is not None and not any(t.udp for t in self.sink.tracks.values()):
            return math.inf  # TCP: the session lives with its connection (the write timeout finds dead peers)
        if self.busy:
            return self.last_activity + self.server.session_timeout
        return min(self.setup_deadline, self.last_activity + self.server.session_timeout)

    async def _loop(self) -> bool:
        """Read and answer until the connection ends (False) or an ANNOUNCE is to be published
        (True: the caller enters the engine's ``publish`` block and calls this again)."""
        self.message_started = trio.current_time()
        events = self.events
        while True:
            while events:
                event = events.popleft()
                if isinstance(event, Interleaved):
                    await self._interleaved(event)
                    continue
                if self.ticket is not None:
                    self.ticket.progress()
                self.last_activity = trio.current_time()
                if not await self._request(event):
                    await self.egress.drain()
                    return False
                if self.pending_publish is not None and self.publisher is None:
                    return True
            if self.sink is not None and self.sink.ended:
                reason = self.sink.end_reason
                await self.egress.drain()
                raise CloseConnection(f"stream {reason.value if reason else 'ended'}")
            was_in_message = self.reader.in_message
            with trio.move_on_at(self._deadline()) as scope:
                data = await self.egress.receive(65536)
            if scope.cancelled_caught:
                if self.reader.in_message:
                    raise CloseConnection(f"request head not complete within {self.server.head_timeout:g} s")
                if self.busy:
                    raise CloseConnection(f"session timed out ({self.server.session_timeout:g} s)")
                raise CloseConnection("neither played nor published in time")
            if data is None:
                continue
            if not data:
                return False
            if not was_in_message:
                self.message_started = trio.current_time()
            try:
                events.extend(self.reader.feed(data))
            except RtspError as exc:
                self.egress.send(encode_response(exc.status, None, [("Connection", "close")]))
                await self.egress.drain()
                raise CloseConnection(f"malformed request: {exc}") from None
            if self.reader.in_message and not was_in_message:
                self.message_started = trio.current_time()

    async def _request(self, request: RtspRequest) -> bool:
        """Answer one request; False when the connection should close after it."""
        cseq = request.header("CSeq") or "0"
        if not cseq.isdigit() or len(cseq) > 10:
            cseq = "0"
        headers: list[tuple[str, str]] = [("CSeq", cseq), ("Server", "arcly-trio")]
        method = request.method
        try:
            session = request.header("Session")
            if session is not None and method not in ("OPTIONS", "DESCRIBE", "ANNOUNCE"):
                sid = session.split(";", 1)[0].strip()
                if self.session_id is None or sid != self.session_id:
                    raise _Answer(454)
            handler = _HANDLERS.get(method)
            if handler is None:
                raise _Answer(501 if method.isupper() else 405, "", [("Public", _PUBLIC)])
            more, body, extra = await handler(self, request)
        except _Answer as answer:
            headers += answer.headers
            if self.session_id is not None and answer.status == 454:
                pass
            self.egress.send(encode_response(answer.status, None, headers))
            return True
        if method == "ANNOUNCE":
            return more  # answered once the engine's publish block is entered
        headers += extra
        if self.session_id is not None and method not in ("OPTIONS",):
            headers.append(("Session", f"{self.session_id};timeout={int(self.server.session_timeout)}"))
        self.egress.send(encode_response(200, None, headers, body))
        if method == "PLAY" and self.sink is not None and not self.playing:
            self.playing = True
            self.sink.start()
        return more

    # ------------------------------------------------------------------ requests

    async def _options(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        return True, b"", [("Public", _PUBLIC)]

    async def _keepalive(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        return True, b"", []

    async def _teardown(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        return False, b"", [("Connection", "close")]

    def _credentials(self, request: RtspRequest, query: dict[str, str], action: str, key: StreamKey) -> Credentials:
        token = query.get("token")
        authorization = request.header("Authorization")
        if authorization:
            scheme, _, value = authorization.partition(" ")
            scheme = scheme.lower()
            if scheme == "basic":
                try:
                    decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    raise _Answer(400) from None
                _, _, password = decoded.partition(":")
                token = password
            elif scheme == "digest":
                token = self._digest_token(request, value, action) or ""
        return Credentials(token=token, peer=self.peer, query=query, protocol=self.server.name)

    def _digest_token(self, request: RtspRequest, value: str, action: str) -> str | None:
        """The token a Digest answer proves (checked against the token authenticator's), or None."""
        expected = _expected_token(self.engine.authenticator, action)
        if expected is None:
            return None
        fields = _digest_fields(value)
        algorithm = fields.get("algorithm", "MD5").upper()
        digest = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}.get(algorithm)
        if digest is None or fields.get("nonce") != self.nonce or fields.get("realm") != _REALM:
            return None

        def h(text: str) -> str:
            return digest(text.encode("utf-8")).hexdigest()

        ha1 = h(f"{fields.get('username', '')}:{_REALM}:{expected}")
        ha2 = h(f"{request.method}:{fields.get('uri', '')}")
        if fields.get("qop"):
            want = h(f"{ha1}:{self.nonce}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:{fields['qop']}:{ha2}")
        else:
            want = h(f"{ha1}:{self.nonce}:{ha2}")
        response = fields.get("response", "")
        if secrets.compare_digest(want.encode(), response.lower().encode()):
            return expected
        return None

    def _challenges(self) -> list[tuple[str, str]]:
        out = [("WWW-Authenticate", f'Basic realm="{_REALM}"')]
        if _token_authenticator(self.engine.authenticator) is not None:
            out.insert(0, ("WWW-Authenticate", f'Digest realm="{_REALM}", nonce="{self.nonce}", algorithm=MD5'))
            out.insert(0, ("WWW-Authenticate", f'Digest realm="{_REALM}", nonce="{self.nonce}", algorithm=SHA-256'))
        return out

    def _mark_busy(self) -> None:
        if not self.busy:
            self.busy = True
            self.server.connections += 1
            self.engine.activity.enter()
            self.setup_deadline = math.inf
            if self.ticket is not None:
                self.ticket.busy()

    def _hold_session(self) -> None:
        """Count this connection's session against its address's cap (453 past it)."""
        if self.holds_session:
            return
        server, address = self.server, self.peer[0]
        held = server.sessions_per_address.get(address, 0)
        cap = server.max_sessions_per_address
        if cap is not None and held >= cap:
            raise _Answer(453)
        server.sessions_per_address[address] = held + 1
        self.holds_session = True

    def _new_session(self) -> None:
        if self.session_id is None:
            self.session_id = secrets.token_hex(8)

    async def _describe(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        if self.mode is not None:
            raise _Answer(455)
        try:
            key, query, _ = stream_key(request.uri)
        except (ValueError, InvalidStreamName):
            raise _Answer(404) from None
        self._hold_session()
        sink = RtspSink(self.egress, key)
        sink.on_config = self.config_arrived.set
        credentials = self._credentials(request, query, "play", key)
        try:
            attached = self.engine.attach(key, sink, credentials, protocol=self.server.name)
            sink.subscriber = await attached.__aenter__()
        except (StreamNotFound, InvalidStreamName):
            raise _Answer(404) from None
        except Unauthorized as exc:
            log.debug("rtsp %s:%s play of %s refused: %s", *self.peer, key, exc)
            raise _Answer(401, "", self._challenges()) from None
        except (AppNotFound, EngineClosed):
            raise _Answer(404) from None
        self.sink, self.attached, self.mode = sink, attached, "play"
        self.key = sink.key = sink.subscriber.key
        info = self.engine.stream(self.key).info
        with trio.move_on_after(DESCRIBE_WAIT):
            while not (FrameKind.VIDEO in sink.configs or (info.video_codec is None and sink.configs)):
                self.config_arrived = trio.Event()
                sink.on_config = self.config_arrived.set
                await self.config_arrived.wait()
        tracks: list[SdpTrack] = []
        for kind, payload_type in ((FrameKind.VIDEO, 96), (FrameKind.AUDIO, 97)):
            frame = sink.configs.get(kind)
            if frame is None or frame.codec not in MODULES:
                continue
            try:
                track = describe_track(
                    frame.codec, frame.payload, payload_type=payload_type, control=f"trackID={len(tracks)}"
                )
            except ValueError:
                continue
            tracks.append(track)
            sink.add_track(OutTrack(track, kind, MODULES[frame.codec]))
        if not tracks:
            raise _Answer(415)
        self.described = tracks
        sdp = build_sdp(tracks, address=self._local_address(), name=str(self.key))
        base = request.uri.split("?", 1)[0].rstrip("/") + "/"
        return True, sdp, [("Content-Base", base), ("Content-Type", "application/sdp")]

    def _local_address(self) -> str:
        try:
            stream = self.stream
            while isinstance(stream, trio.SSLStream):
                stream = stream.transport_stream
            assert isinstance(stream, trio.SocketStream)
            return str(stream.socket.getsockname()[0])
        except (OSError, AssertionError):
            return "0.0.0.0"

    def _choose_transport(self, request: RtspRequest) -> TransportSpec:
        value = request.header("Transport")
        if value is None:
            raise _Answer(461)
        try:
            specs = parse_transport(value)
        except TransportError:
            raise _Answer(461) from None
        for spec in specs:
            if not spec.unicast:
                continue
            if spec.protocol == "tcp":
                return spec
            if spec.protocol == "udp" and spec.client_port is not None and self.server.udp is not None:
                return spec
        raise _Answer(461)

    def _channels(self, spec: TransportSpec, used: set[int], index: int) -> tuple[int, int]:
        channels = spec.interleaved or (2 * index, 2 * index + 1)
        if channels[0] in used or channels[1] in used or channels[0] == channels[1]:
            raise _Answer(461)
        return channels

    def _take_pair(self) -> UdpPair:
        udp = self.server.udp
        if udp is None or len(self.pairs) >= MAX_TRACKS:
            raise _Answer(461)
        pair = udp.take()
        if pair is None:
            raise _Answer(453)
        self.pairs.append(pair)
        return pair

    async def _setup(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        if self.mode == "play":
            return self._setup_play(request)
        if self.mode == "record":
            return self._setup_record(request)
        raise _Answer(455)

    def _track_index(self, uri: str, controls: Sequence[str]) -> int:
        path = uri.split("?", 1)[0] if "?" in uri and "/" not in uri.split("?", 1)[1] else uri
        for index, control in enumerate(controls):
            if control and (path.rstrip("/").endswith("/" + control) or path == control):
                return index
        if len(controls) == 1:
            return 0
        raise _Answer(404)

    def _setup_play(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        sink = self.sink
        assert sink is not None
        if self.playing:
            raise _Answer(455)
        index = self._track_index(request.uri, [t.control for t in self.described])
        sdp = self.described[index]
        kind = FrameKind.VIDEO if sdp.kind == "video" else FrameKind.AUDIO
        track = sink.tracks[kind]
        spec = self._choose_transport(request)
        if track.setup:
            raise _Answer(455)
        if spec.protocol == "tcp":
            if any(t.udp is not None for t in sink.tracks.values()):
                raise _Answer(461)  # one transport per session
            used: set[int] = set()
            for other in sink.tracks.values():
                if other.channel is not None:
                    used |= {other.channel, other.channel + 1}
            channels = self._channels(spec, used, index)
            track.channel = channels[0]
            answer = TransportSpec("RTP/AVP/TCP", "tcp", interleaved=channels, ssrc=track.ssrc)
        else:
            if any(t.channel is not None for t in sink.tracks.values()):
                raise _Answer(461)
            pair = self._take_pair()
            assert spec.client_port is not None
            host = self.peer[0]  # the client's own address, whatever "destination" says (RFC 7826)
            track.udp = (pair.rtp, (host, spec.client_port[0]), (host, spec.client_port[1]))
            track.udp_rtcp = pair.rtcp
            assert self.nursery is not None
            self.nursery.start_soon(self._receive_rtcp, pair)
            answer = TransportSpec(
                "RTP/AVP",
                "udp",
                client_port=spec.client_port,
                server_port=(pair.port, pair.port + 1),
                ssrc=track.ssrc,
            )
        track.setup = True
        self._new_session()
        return True, b"", [("Transport", format_transport(answer))]

    async def _play(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        sink = self.sink
        if self.mode != "play" or sink is None or not any(t.setup for t in sink.tracks.values()):
            raise _Answer(455)
        if self.playing:
            return True, b"", []
        self._mark_busy()
        assert self.key is not None
        self.egress.max_frames = self.engine.application(self.key.app).spec.subscriber_queue
        log.info("%s %s:%s playing %s", self.server.name, *self.peer, self.key)
        base = request.uri.split("?", 1)[0].rstrip("/")
        infos = [
            f"url={base}/{t.sdp.control};seq={t.sequence};rtptime={t.base & 0xFFFFFFFF}"
            for t in sink.tracks.values()
            if t.setup
        ]
        return True, b"", [("Range", "npt=0.000-"), ("RTP-Info", ",".join(infos))]

    async def _pause(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        if self.mode is None:
            raise _Answer(455)
        return True, b"", []

    # ------------------------------------------------------------------ record

    async def _announce(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        if self.mode is not None:
            raise _Answer(455)
        try:
            key, query, _ = stream_key(request.uri)
        except (ValueError, InvalidStreamName):
            raise _Answer(400) from None
        content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            raise _Answer(415)
        try:
            sdp = parse_sdp(request.body)
        except SdpError:
            raise _Answer(400) from None
        tracks: list[InRecordTrack] = []
        for track in sdp.tracks[:MAX_TRACKS]:
            make = _DEPACKETIZERS.get(track.codec)
            if make is None:
                continue
            kind = FrameKind.VIDEO if track.kind == "video" else FrameKind.AUDIO
            if any(t.state.kind is kind for t in tracks):
                continue  # one track of each kind (the kernel's main tracks)
            if track.codec == "aac" and track.config is None:
                continue  # cannot be decoded without its AudioSpecificConfig
            state = InTrack(kind, track.codec, track.payload_type, track.clock_rate, make())
            tracks.append(InRecordTrack(track, state))
        if not tracks:
            raise _Answer(415)
        self._hold_session()
        credentials = self._credentials(request, query, "publish", key)
        self.in_tracks = tracks
        cseq = request.header("CSeq") or "0"
        self.pending_publish = (key, credentials, cseq if cseq.isdigit() and len(cseq) <= 10 else "0")
        return True, b"", []

    def _setup_record(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        if self.recording:
            raise _Answer(455)
        index = self._track_index(request.uri, [t.sdp.control for t in self.in_tracks])
        track = self.in_tracks[index]
        if track.setup:
            raise _Answer(455)
        spec = self._choose_transport(request)
        if spec.mode not in (None, "record", "receive"):
            raise _Answer(461)
        if spec.protocol == "tcp":
            used: set[int] = set()
            for other in self.in_tracks:
                if other.channel is not None:
                    used |= {other.channel, other.channel + 1}
            channels = self._channels(spec, used, index)
            track.channel = channels[0]
            answer = TransportSpec("RTP/AVP/TCP", "tcp", interleaved=channels, mode="record")
        else:
            pair = self._take_pair()
            track.udp = pair
            answer = TransportSpec(
                "RTP/AVP",
                "udp",
                client_port=spec.client_port,
                server_port=(pair.port, pair.port + 1),
                mode="record",
            )
        track.setup = True
        return True, b"", [("Transport", format_transport(answer))]

    async def _record(self, request: RtspRequest) -> tuple[bool, bytes, list[tuple[str, str]]]:
        if self.mode != "record" or not any(t.setup for t in self.in_tracks):
            raise _Answer(455)
        if not self.recording:
            self.recording = True
            self._mark_busy()
            self.server.publishing(self)
            log.info("%s %s:%s publishing %s", self.server.name, *self.peer, self.key)
            assert self.nursery is not None
            for track in self.in_tracks:
                if track.udp is not None:
                    self.nursery.start_soon(self._receive_rtp, track)
                    self.nursery.start_soon(self._receive_rtcp, track.udp)
        return True, b"", []

    async def _interleaved(self, event: Interleaved) -> None:
        self.last_activity = trio.current_time()
        if not self.recording:
            return  # RTCP receiver reports of a player, or media before RECORD
        for track in self.in_tracks:
            if track.channel == event.channel:
                try:
                    packet = parse_rtp(event.data)
                except RtpError:
                    return
                self.last_activity = trio.current_time()
                await self._media(track, [(packet, False)])
                return

    async def _media(self, track: InRecordTrack, released: list[tuple[RtpPacket, bool]]) -> None:
        publisher = self.publisher
        if publisher is None or not released:
            return
        now = trio.current_time()
        if self.epoch is None:
            self.epoch = now
        arrival_ms = int((now - self.epoch) * 1000)
        state = track.state
        if not track.seeded:
            track.seeded = True
            await self._seed(track, released[0][0].timestamp, arrival_ms)
        for packet, lost in released:
            if packet.payload_type != state.payload_type:
                continue
            units = state.depacketizer.push(packet.payload, marker=packet.marker, timestamp=packet.timestamp, lost=lost)
            for unit in units:
                pts = state.pts(unit.timestamp, arrival_ms)
                if state.kind is FrameKind.AUDIO:
                    await publisher.send(Frame(FrameKind.AUDIO, state.codec, pts, pts, unit.payload))
                else:
                    if unit.config is not None:
                        state.configured = True
                        await publisher.send(Frame(FrameKind.VIDEO, state.codec, pts, pts, unit.config, config=True))
                    if not state.configured:
                        continue
                    await publisher.send(Frame(FrameKind.VIDEO, state.codec, pts, pts, unit.payload, unit.keyframe))
                state.frames += 1
                self.frames_in += 1

    @property
    def packets_lost(self) -> int:
        """RTP packets of a UDP publisher that never arrived (given up by the reorder buffer)."""
        return sum(track.state.reorder.lost for track in self.in_tracks)

    @property
    def packets_reordered(self) -> int:
        """RTP packets of a UDP publisher that came after a later one (put back in order)."""
        return sum(track.state.reorder.reordered for track in self.in_tracks)

    async def _seed(self, track: InRecordTrack, timestamp: int, arrival_ms: int) -> None:
        """What the SDP says, before the first packet: the track's config frame (senders with
        global headers, ffmpeg's, send the parameter sets and the AudioSpecificConfig nowhere
        else), and for H.264 the parameter sets fed to the depacketizer, which holds pictures
        until it knows them."""
        state = track.state
        publisher = self.publisher
        assert publisher is not None
        config = track.sdp.config
        if config is None:
            return
        pts = state.pts(timestamp, arrival_ms)
        await publisher.send(Frame(state.kind, state.codec, pts, pts, config, config=True))
        state.configured = True
        if state.codec == "h264":
            try:
                units = h264.parameter_sets(config)
            except RemoteProtocolError:
                return
            stap_a = bytes([24]) + b"".join(len(u).to_bytes(2, "big") + u for u in units)
            state.depacketizer.push(stap_a, marker=True, timestamp=(timestamp - 1) & 0xFFFFFFFF)

    # ------------------------------------------------------------------ UDP

    async def _receive_rtp(self, track: InRecordTrack) -> None:
        pair = track.udp
        assert pair is not None
        sock = pair.rtp
        reorder = track.state.reorder
        while True:
            # Wake at least every max_wait: a gap is given up (and the depacketizer told) even
            # when nothing more arrives.
            with trio.move_on_after(reorder.max_wait):
                await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    data, source = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                except OSError:
                    return
                if source[0] != self.peer[0]:
                    continue  # only the client's own address may send its media
                try:
                    packet = parse_rtp(data)
                except RtpError:
                    continue
                self.last_activity = trio.current_time()
                await self._media(track, reorder.push(packet, trio.current_time()))
            await self._media(track, reorder.flush(trio.current_time()))

    async def _receive_rtcp(self, pair: UdpPair) -> None:
        sock = pair.rtcp
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    _, source = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                except OSError:
                    return
                if source[0] == self.peer[0]:
                    self.last_activity = trio.current_time()  # a UDP client's keep-alive

    async def _reports(self) -> None:
        """Sender reports for a player, every second."""
        while True:
            await trio.sleep(1.0)
            sink = self.sink
            if sink is None or not self.playing or sink.ended:
                continue
            for track, report in sink.sender_reports(time.time()):
                sink.send_rtcp(track, report + rtcp.sdes_cname(track.ssrc, "arcly-trio"))

    # ------------------------------------------------------------------ the end

    async def _cleanup(self) -> None:
        with trio.CancelScope(shield=True):
            attached, self.attached = self.attached, None
            if attached is not None:
                await attached.__aexit__(None, None, None)
                if self.playing and self.sink is not None:
                    log.info(
                        "%s %s:%s stopped playing %s (%d frames dropped)",
                        self.server.name,
                        *self.peer,
                        self.key,
                        self.sink.dropped,
                    )
        if self.holds_session:
            self.holds_session = False
            counts, address = self.server.sessions_per_address, self.peer[0]
            counts[address] -= 1
            if not counts[address]:
                del counts[address]
        udp = self.server.udp
        for pair in self.pairs:
            if udp is not None:
                udp.give_back(pair)
            else:
                pair.close()
        self.pairs = []
        self.egress.discard()


def _token_authenticator(authenticator: Any, depth: int = 0) -> TokenAuthenticator | None:
    """The :class:`TokenAuthenticator` inside ``authenticator`` (itself, or a member of a
    composite or swappable one), if any: Digest needs the token it expects."""
    if isinstance(authenticator, TokenAuthenticator):
        return authenticator
    if depth > 4:
        return None
    inner = [getattr(authenticator, "current", None), *(getattr(authenticator, "members", ()) or ())]
    for member in inner:
        if member is not None and member is not authenticator:
            found = _token_authenticator(member, depth + 1)
            if found is not None:
                return found
    return None


def _expected_token(authenticator: Any, action: str) -> str | None:
    found = _token_authenticator(authenticator)
    return found.expected_token(action) if found is not None else None


def _digest_fields(value: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in value.split(",")[:16]:
        name, _, item = part.strip().partition("=")
        fields[name.strip().lower()] = item.strip().strip('"')
    return fields


_HANDLERS: dict[str, Any] = {
    "OPTIONS": RtspConnection._options,
    "GET_PARAMETER": RtspConnection._keepalive,
    "SET_PARAMETER": RtspConnection._keepalive,
    "DESCRIBE": RtspConnection._describe,
    "SETUP": RtspConnection._setup,
    "PLAY": RtspConnection._play,
    "PAUSE": RtspConnection._pause,
    "TEARDOWN": RtspConnection._teardown,
    "ANNOUNCE": RtspConnection._announce,
    "RECORD": RtspConnection._record,
}
