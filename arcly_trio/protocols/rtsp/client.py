"""The RTSP client state machine of the camera pull: OPTIONS, DESCRIBE, SETUP, PLAY, keep-alives, TEARDOWN.

What it is for: pulling an IP camera's (or any RTSP server's) stream. The trio driver
(:mod:`arcly_trio.relay.rtsp_pull`) owns the socket; this module owns the protocol, sans-IO
like h11: :meth:`RtspClient.start` queues the first request, :meth:`RtspClient.receive_data`
takes the bytes the server sent and returns events (:class:`Described`, :class:`Playing`,
:class:`RtpData`), and :meth:`RtspClient.data_to_send` gives the bytes to write. It never
touches a socket, a clock or trio.

How it works (RFC 2326 / RFC 7826 as cameras speak them):

* ``OPTIONS`` (what the server supports: ``GET_PARAMETER`` for keep-alives if listed), then
  ``DESCRIBE`` (``Accept: application/sdp``). A ``401`` with ``WWW-Authenticate`` is answered
  once with the user and password of the URL (``rtsp://user:pass@camera/...``): ``Digest``
  (RFC 2617, MD5, with or without ``qop=auth``) when offered, else ``Basic``; every later
  request carries the credentials. A second ``401`` is a refusal.
* The SDP is read (:func:`~arcly_trio.protocols.rtsp.sdp.parse_sdp`): the first video track
  (H.264, H.265) and the first audio track (AAC as ``mpeg4-generic``, Opus, G.711
  ``PCMA``/``PCMU``) this server can take are set up, others ignored. Each track's control
  URL is resolved against ``Content-Base`` (or ``Content-Location``, or the request URL).
* :meth:`RtspClient.setup` (the driver calls it after :class:`Described`, with its UDP ports
  when it pulls over UDP) sends one ``SETUP`` per track: TCP interleaved (channels ``2i`` and
  ``2i+1``) or UDP unicast (``client_port``); the ``Session`` of the first answer goes on every
  later request, its ``timeout`` (default 60 s) gives :attr:`RtspClient.keepalive_interval`.
  Then ``PLAY``; its ``200`` is :class:`Playing`. After that, ``$``-framed packets come out as
  :class:`RtpData` (RTP or RTCP of a track); :meth:`RtspClient.keepalive` queues a
  ``GET_PARAMETER`` (or ``OPTIONS`` when the server did not list it), :meth:`RtspClient.teardown`
  a ``TEARDOWN``.

The URL's query parameter ``transport`` (``tcp`` or ``udp``) is ours: it is taken out of the
URL sent to the camera (:func:`split_url`); the rest of the query is the camera's.

Attacker's view: the server is the camera, which may be anything on the network. Messages are
bounded by :class:`~arcly_trio.protocols.rtsp.messages.RtspReader` (a head of 8 KiB, a body of
64 KiB, a packet of 64 KiB); the SDP parser has its own bounds, and at most two tracks are
set up; a channel that was not set up is dropped and counted
(:attr:`RtspClient.stray`). The credentials of the URL are never in an event, an error or
:meth:`RtspClient.describe_url` (the URL shown is :func:`~arcly_trio.core.redact.redact_url`'s),
and are sent only to the server the URL names, only after it asked for them (a 401).
Responses must answer the request in flight (``CSeq``); server-sent requests are answered
``200`` when they are ``GET_PARAMETER``/``OPTIONS`` keep-alives and ``501`` otherwise.

Error policy: :class:`~arcly_trio.core.errors.RemoteRefused` (stage: the method in lower case,
code: the status) for a refusal or a stream this client cannot take (no usable track);
:class:`~arcly_trio.protocols.rtsp.messages.RtspError` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for bytes that are not RTSP or a response
out of order; ``ValueError`` for a URL that is not ``rtsp://host...``. Their texts never carry
the URL's credentials.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import os
import re
from collections.abc import Sequence
from typing import Final, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import attrs

from arcly_trio.core.errors import RemoteRefused
from arcly_trio.core.redact import redact_url
from arcly_trio.protocols.rtsp.messages import (
    Interleaved,
    RtspError,
    RtspReader,
    RtspRequest,
    RtspResponse,
    encode_request,
    encode_response,
)
from arcly_trio.protocols.rtsp.sdp import SdpTrack, control_uri, parse_sdp

__all__ = [
    "ClientState",
    "Described",
    "Playing",
    "RtpData",
    "RtspClient",
    "split_url",
]

#: Seconds a session lives without a request when the server does not say (RFC 2326 12.37).
DEFAULT_SESSION_TIMEOUT: Final = 60
USER_AGENT: Final = "arcly-trio"

#: The codecs this client sets up (the kernel's names), per kind.
_VIDEO: Final = ("h264", "hevc")
_AUDIO: Final = ("aac", "opus", "pcma", "pcmu")
_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class ClientState(enum.Enum):
    """Where the exchange stands (one request in flight at a time)."""

    IDLE = "idle"
    OPTIONS = "options"
    DESCRIBE = "describe"
    DESCRIBED = "described"  # waiting for the driver's setup()
    SETUP = "setup"
    PLAY = "play"
    PLAYING = "playing"
    CLOSED = "closed"


@attrs.frozen
class Described:
    """DESCRIBE answered: the ``tracks`` that will be set up (at most one video, one audio)."""

    tracks: tuple[SdpTrack, ...]


@attrs.frozen
class Playing:
    """PLAY answered: media follows. ``server_ports`` are the server's UDP ``(rtp, rtcp)`` ports
    per track (UDP transport; ``None`` over TCP)."""

    tracks: tuple[SdpTrack, ...]
    server_ports: tuple[tuple[int, int] | None, ...]


@attrs.frozen
class RtpData:
    """One interleaved packet of track ``track``: RTP, or RTCP when ``rtcp``."""

    track: int
    rtcp: bool
    data: bytes


Event = Described | Playing | RtpData


def split_url(url: str) -> tuple[str, str, str, Literal["tcp", "udp"] | None]:
    """``(request URL without credentials and our parameters, user, password, transport)``.

    Raises ``ValueError`` (its text redacted) for a URL that is not ``rtsp://host...``."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        raise ValueError(f"not an rtsp:// URL: {redact_url(url)!r}")
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    transport: Literal["tcp", "udp"] | None = None
    kept = []
    for name, value in pairs:
        if name == "transport":
            if value.lower() not in ("tcp", "udp"):
                raise ValueError(f"transport is tcp or udp, not {value[:16]!r}")
            transport = "udp" if value.lower() == "udp" else "tcp"
        else:
            kept.append((name, value))
    clean = urlunsplit(("rtsp", netloc, parts.path or "/", urlencode(kept), ""))
    return clean, user, password, transport


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _challenges(response: RtspResponse) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for name, value in response.headers:
        if name.lower() != "www-authenticate":
            continue
        scheme, _, rest = value.strip().partition(" ")
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in _AUTH_PARAM.finditer(rest)
        }
        found.setdefault(scheme.lower(), params)
    return found


class RtspClient:
    """One RTSP play session, sans-IO (see the module docstring).

    Args:
        url: ``rtsp://[user:password@]host[:port]/path[?query]``.
        transport: ``"tcp"`` (interleaved) or ``"udp"``; the URL's ``?transport=`` wins.
    """

    def __init__(self, url: str, *, transport: Literal["tcp", "udp"] = "tcp") -> None:
        self.url, self._user, self._password, chosen = split_url(url)
        self.transport: Literal["tcp", "udp"] = chosen or transport
        self.state = ClientState.IDLE
        self.tracks: tuple[SdpTrack, ...] = ()
        self.session: str | None = None
        self.keepalive_interval = DEFAULT_SESSION_TIMEOUT / 2
        self.stray = 0
        """Interleaved packets on channels that were not set up."""
        self._reader = RtspReader(role="client")
        self._out = bytearray()
        self._cseq = 0
        self._pending: tuple[int, str, str, tuple[tuple[str, str], ...]] | None = None
        self._auth: tuple[str, dict[str, str]] | None = None  # (scheme, challenge)
        self._auth_tried = False
        self._nc = 0
        self._get_parameter = False
        self._base = self.url
        self._controls: list[str] = []
        self._ports: list[tuple[int, int] | None] = []
        self._server_ports: list[tuple[int, int] | None] = []
        self._setup_index = 0

    # ------------------------------------------------------------------ public

    @property
    def describe_url(self) -> str:
        """The URL as it may be shown (logs, API): without credentials or query values."""
        return redact_url(self.url)

    def start(self) -> None:
        """Queue the first request (``OPTIONS``)."""
        if self.state is not ClientState.IDLE:
            raise RuntimeError("start() once")
        self._request("OPTIONS", self.url)
        self.state = ClientState.OPTIONS

    def setup(self, udp_ports: Sequence[tuple[int, int]] | None = None) -> None:
        """After :class:`Described`: set the tracks up (UDP: the local ``(rtp, rtcp)`` port pair
        of each track, in order)."""
        if self.state is not ClientState.DESCRIBED:
            raise RuntimeError("setup() after Described")
        if self.transport == "udp" and (udp_ports is None or len(udp_ports) != len(self.tracks)):
            raise ValueError("UDP needs one port pair per track")
        self._ports = list(udp_ports) if udp_ports is not None else [None] * len(self.tracks)
        self.state = ClientState.SETUP
        self._setup_index = 0
        self._send_setup()

    def keepalive(self) -> None:
        """Queue a keep-alive (``GET_PARAMETER``, or ``OPTIONS`` when the server lacks it); nothing
        while another request is in flight."""
        if self.state is ClientState.PLAYING and self._pending is None:
            self._request("GET_PARAMETER" if self._get_parameter else "OPTIONS", self.url)

    def teardown(self) -> None:
        """Queue a ``TEARDOWN`` (when a session exists); the client is closed after it."""
        if self.session is not None and self.state is not ClientState.CLOSED:
            self._request("TEARDOWN", self.url, force=True)
        self.state = ClientState.CLOSED

    def data_to_send(self) -> bytes:
        """The bytes queued for the server (and forget them)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Take bytes from the server; return the events they complete."""
        events: list[Event] = []
        for message in self._reader.feed(data):
            if isinstance(message, Interleaved):
                index, rtcp = divmod(message.channel, 2)
                if self.transport == "tcp" and index < len(self.tracks) and self.state is ClientState.PLAYING:
                    events.append(RtpData(index, bool(rtcp), message.data))
                else:
                    self.stray += 1
            elif isinstance(message, RtspRequest):
                self._answer_server(message)
            else:
                event = self._on_response(message)
                if event is not None:
                    events.append(event)
        return events

    # ------------------------------------------------------------------ requests

    def _request(
        self, method: str, uri: str, headers: tuple[tuple[str, str], ...] = (), *, force: bool = False
    ) -> None:
        if self._pending is not None and not force:
            raise RuntimeError(f"{method} while {self._pending[1]} is in flight")
        self._cseq += 1
        full: list[tuple[str, str]] = [("CSeq", str(self._cseq)), ("User-Agent", USER_AGENT)]
        if self.session is not None:
            full.append(("Session", self.session))
        authorization = self._authorization(method, uri)
        if authorization:
            full.append(("Authorization", authorization))
        full.extend(headers)
        try:
            self._out += encode_request(method, uri, full)
        except ValueError:  # a control URL or a header value of the server's that cannot be sent back
            raise RtspError(f"the server gave a {method} URL or header that cannot be sent") from None
        self._pending = (self._cseq, method, uri, headers)

    def _authorization(self, method: str, uri: str) -> str | None:
        if self._auth is None:
            return None
        scheme, challenge = self._auth
        if scheme == "basic":
            token = base64.b64encode(f"{self._user}:{self._password}".encode()).decode("ascii")
            return f"Basic {token}"
        realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
        ha1 = _md5(f"{self._user}:{realm}:{self._password}")
        ha2 = _md5(f"{method}:{uri}")
        fields = [f'username="{self._user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
        qops = [q.strip() for q in challenge.get("qop", "").split(",")]
        if "auth" in qops:
            self._nc += 1
            nc = f"{self._nc:08x}"
            cnonce = os.urandom(8).hex()
            response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            response = _md5(f"{ha1}:{nonce}:{ha2}")
        fields.append(f'response="{response}"')
        if "opaque" in challenge:
            fields.append(f'opaque="{challenge["opaque"]}"')
        fields.append("algorithm=MD5")
        return "Digest " + ", ".join(fields)

    def _send_setup(self) -> None:
        index = self._setup_index
        if self.transport == "tcp":
            transport = f"RTP/AVP/TCP;unicast;interleaved={2 * index}-{2 * index + 1}"
        else:
            ports = self._ports[index]
            assert ports is not None
            transport = f"RTP/AVP;unicast;client_port={ports[0]}-{ports[1]}"
        self._request("SETUP", self._controls[index], (("Transport", transport),))

    def _answer_server(self, request: RtspRequest) -> None:
        cseq = request.header("cseq") or "0"
        cseq = cseq if cseq.isdigit() and len(cseq) < 10 else "0"
        status = 200 if request.method in ("GET_PARAMETER", "OPTIONS") else 501
        self._out += encode_response(status, None, (("CSeq", cseq),))

    # ------------------------------------------------------------------ responses

    def _on_response(self, response: RtspResponse) -> Event | None:
        pending = self._pending
        if pending is None:
            if self.state is ClientState.CLOSED:
                return None  # the TEARDOWN's answer, or a late keep-alive's
            raise RtspError("a response to no request")
        cseq, method, uri, headers = pending
        answered = (response.header("cseq") or "").strip()
        if answered != str(cseq):
            if answered.isdigit() and int(answered) < cseq:
                return None  # a late answer (to a keep-alive sent before TEARDOWN, say)
            raise RtspError("a response with the wrong CSeq")
        self._pending = None
        if response.status == 401 and not self._auth_tried and (self._user or self._password):
            challenges = _challenges(response)
            self._auth_tried = True
            if "digest" in challenges and challenges["digest"].get("algorithm", "MD5").upper() == "MD5":
                self._auth = ("digest", challenges["digest"])
            elif "basic" in challenges:
                self._auth = ("basic", {})
            else:
                raise RemoteRefused(method.lower(), "401", "no authentication scheme this client speaks")
            self._request(method, uri, headers)
            return None
        if self.state is ClientState.PLAYING:
            return None  # a keep-alive answered (any status: the session goes on or the media stops)
        if self.state is ClientState.CLOSED:
            return None
        if method == "OPTIONS" and self.state is ClientState.OPTIONS:
            # Some cameras refuse OPTIONS without credentials, or at all: DESCRIBE decides.
            public = (response.header("public") or "").upper()
            self._get_parameter = "GET_PARAMETER" in public
            self.state = ClientState.DESCRIBE
            self._request("DESCRIBE", self.url, (("Accept", "application/sdp"),))
            return None
        if not 200 <= response.status < 300:
            raise RemoteRefused(method.lower(), str(response.status), response.reason[:200])
        if self.state is ClientState.DESCRIBE:
            return self._on_described(response)
        if self.state is ClientState.SETUP:
            return self._on_setup(response)
        if self.state is ClientState.PLAY:
            self.state = ClientState.PLAYING
            return Playing(self.tracks, tuple(self._server_ports))
        raise RtspError(f"a response in state {self.state.value}")

    def _on_described(self, response: RtspResponse) -> Described:
        session = parse_sdp(response.body)
        base = response.header("content-base") or response.header("content-location") or self.url
        if not base.lower().startswith("rtsp://"):
            base = self.url
        self._base = control_uri(base, session.control)
        chosen: list[SdpTrack] = []
        for kind, codecs in (("video", _VIDEO), ("audio", _AUDIO)):
            found = next((t for t in session.tracks if t.kind == kind and t.codec in codecs), None)
            if found is not None:
                chosen.append(found)
        if not chosen:
            raise RemoteRefused("describe", "415", "no track of a codec this server takes")
        self.tracks = tuple(chosen)
        self._controls = [control_uri(base, t.control) for t in chosen]
        self.state = ClientState.DESCRIBED
        return Described(self.tracks)

    def _on_setup(self, response: RtspResponse) -> Event | None:
        session = response.header("session")
        if session is not None and self.session is None:
            ident, _, params = session.partition(";")
            self.session = ident.strip()[:128]
            match = re.search(r"timeout\s*=\s*(\d{1,6})", params)
            if match and int(match.group(1)) > 0:
                self.keepalive_interval = max(1.0, int(match.group(1)) / 2)
        if self.session is None:
            raise RtspError("SETUP answered without a Session")
        server_ports: tuple[int, int] | None = None
        if self.transport == "udp":
            match = re.search(r"server_port\s*=\s*(\d{1,5})(?:-(\d{1,5}))?", response.header("transport") or "")
            if match:
                rtp = int(match.group(1))
                server_ports = (rtp, int(match.group(2)) if match.group(2) else rtp + 1)
        self._server_ports.append(server_ports)
        self._setup_index += 1
        if self._setup_index < len(self.tracks):
            self._send_setup()
        else:
            self.state = ClientState.PLAY
            self._request("PLAY", self._base, (("Range", "npt=0.000-"),))
        return None
