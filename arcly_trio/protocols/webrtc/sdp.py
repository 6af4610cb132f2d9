"""SDP offer/answer for WHIP and WHEP (RFC 8866, RFC 8829 JSEP, RFC 8843 BUNDLE): parse the
client's offer, choose one codec per m-section, write the answer.

The server of issue 22 is always the answerer: a browser or ffmpeg POSTs an offer to
``/{app}/{stream}/whip`` (it publishes, we receive) or ``/whep`` (it plays, we send), and gets
back an answer for one transport: ICE-lite (``a=ice-lite``), every accepted section in one
``a=group:BUNDLE``, rtcp-mux only, our host candidates with ``a=end-of-candidates``, and the
DTLS role (``a=setup:passive`` when the offer says ``actpass`` or ``active``; ``active`` when it
says ``passive``, as ffmpeg 8's WHIP muxer does).

* :func:`parse_sdp` reads an offer into a :class:`SessionDescription` of :class:`Media`
  sections, each with its :class:`Codec` list (``a=rtpmap`` names lower-cased, ``a=fmtp``
  parameters, ``a=rtcp-fb`` values, static payload types 0, 8, 9 and 13 known without rtpmap).
  Session-level ``ice-ufrag``, ``ice-pwd``, ``fingerprint``, ``setup`` and direction are
  inherited by every section, so each :class:`Media` carries its effective values.
* :func:`answer_whep` accepts the first video section (if a :class:`VideoSource` is given) and
  the first audio section (Opus, if ``audio``), both ``sendonly``, with an SSRC of ours
  announced (``a=ssrc`` cname and msid). H.264 is chosen by profile (RFC 6184 section 8.1,
  RFC 7742): a stream's ``profile_level_id`` from its SPS goes to an offered payload type of
  the same profile or of one whose decoder decodes it (constrained baseline is a subset of
  baseline, main and high; main and constrained high of high), preferring the same profile,
  then ``level-asymmetry-allowed=1``, then the offer's order; ``packetization-mode=1`` only.
* :func:`answer_whip` accepts the first video and first audio section the client sends on,
  ``recvonly``, with the first codec in ``video_codecs``/``audio_codecs`` order that is offered.
* Every section the server cannot use (a second video, data channels, a wrong direction, no
  rtcp-mux, no ``a=mid``) is answered rejected (port 0, ``a=inactive``), keeping its mid, so the
  answer's m-lines match the offer's one for one. The chosen codec keeps the offer's payload
  type and fmtp, and the ``rtcp-fb`` values we act on (``nack``, ``nack pli``, ``ccm fir``);
  rtx, red, ulpfec and flexfec are never answered (we retransmit on the original SSRC). The
  only header extension answered is ``urn:ietf:params:rtp-hdrext:sdes:mid``.

Attacker's view: an offer is read only up to :data:`MAX_SDP_BYTES` (32 KiB, UTF-8),
:data:`MAX_LINES` lines, :data:`MAX_MEDIA` m-sections, :data:`MAX_ATTRIBUTES` attribute lines
per section (and at session level), :data:`MAX_CODECS` payload types per section, and at most
:data:`MAX_CANDIDATES`, :data:`MAX_SSRCS`, :data:`MAX_EXTMAPS`, :data:`MAX_FINGERPRINTS`,
:data:`MAX_FMTP_PARAMETERS` of their kind; ICE fragments are at most 256 characters (RFC 8839).
Parsing is linear in the offer's size and keeps only what it reads; the answer is built from
what was accepted, never echoing unchecked text: a control character anywhere (a lone CR
included) rejects the offer, so nothing echoed (mids, tokens, the chosen codec's fmtp) can
start a line of its own in the answer.

Error policy: :func:`parse_sdp` raises :class:`SdpError` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for an offer that is oversized, not UTF-8,
or malformed, saying which line; it never raises anything else (fuzzed). The answer functions
raise :class:`NoCommonCodec` (an :class:`SdpError`: HTTP 406) when nothing can be accepted, or
when a WHEP stream's video is not among the offered codecs, naming what was offered, and
:class:`SdpError` for an offer without ICE credentials or a DTLS fingerprint. A
:class:`LocalEndpoint` or :class:`VideoSource` that cannot be written (no candidate, an unknown
codec, a ``profile_level_id`` that is not 6 hex digits) raises :class:`SdpUsageError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_SDP_BYTES",
    "MAX_LINES",
    "MAX_MEDIA",
    "MAX_ATTRIBUTES",
    "MAX_CODECS",
    "MAX_CANDIDATES",
    "MAX_SSRCS",
    "MAX_EXTMAPS",
    "MAX_FINGERPRINTS",
    "MAX_FMTP_PARAMETERS",
    "MID_EXTENSION",
    "SdpError",
    "NoCommonCodec",
    "SdpUsageError",
    "Codec",
    "Media",
    "SessionDescription",
    "parse_sdp",
    "Candidate",
    "LocalEndpoint",
    "VideoSource",
    "Track",
    "Answer",
    "answer_whep",
    "answer_whip",
    "h264_profile",
]

MAX_SDP_BYTES: Final = 32 * 1024
"""The largest offer read (Chromium's with every codec is about 6 KiB)."""
MAX_LINES: Final = 2048
"""The most lines in an offer."""
MAX_MEDIA: Final = 16
"""The most m-sections in an offer."""
MAX_ATTRIBUTES: Final = 512
"""The most ``a=`` lines in one m-section (or at session level)."""
MAX_CODECS: Final = 64
"""The most payload types on one m-line."""
MAX_CANDIDATES: Final = 32
"""The most ``a=candidate`` lines in one m-section."""
MAX_SSRCS: Final = 32
"""The most distinct SSRCs (and SSRC groups) in one m-section."""
MAX_EXTMAPS: Final = 32
"""The most ``a=extmap`` lines in one m-section."""
MAX_FINGERPRINTS: Final = 8
"""The most ``a=fingerprint`` lines in one m-section (or at session level)."""
MAX_FMTP_PARAMETERS: Final = 32
"""The most parameters in one ``a=fmtp`` line."""
MAX_ICE_CHARS: Final = 256
"""The longest ``ice-ufrag`` or ``ice-pwd`` (RFC 8839 section 5.4)."""

MID_EXTENSION: Final = "urn:ietf:params:rtp-hdrext:sdes:mid"
DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")
FEEDBACK_ANSWERED: Final = ("nack", "nack pli", "ccm fir")
"""The ``rtcp-fb`` values kept in an answer (what the server acts on)."""
_STATIC: Final = {0: ("pcmu", 8000, 1), 8: ("pcma", 8000, 1), 9: ("g722", 8000, 1), 13: ("cn", 8000, 1)}
_SDP_NAMES: Final = {"h264": "h264", "hevc": "h265", "h265": "h265", "av1": "av1", "vp9": "vp9", "vp8": "vp8"}
_AUDIO_NAMES: Final = {"opus": "opus"}
_WRITTEN: Final = {"h264": "H264", "h265": "H265", "av1": "AV1", "vp9": "VP9", "vp8": "VP8", "opus": "opus"}
_FINGERPRINT_HEX: Final = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){0,127}")
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_CNAME: Final = "arcly"
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_MID: Final = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}")


class SdpError(RemoteProtocolError):
    """An offer that is malformed, oversized or unusable."""


class NoCommonCodec(SdpError):
    """Nothing acceptable was offered (``offered`` lists what was, as ``kind: names``)."""

    def __init__(self, reason: str, offered: tuple[str, ...]) -> None:
        super().__init__(f"{reason}; offered: {'; '.join(offered) or 'nothing'}")
        self.offered = offered


class SdpUsageError(LocalProtocolError):
    """An endpoint or source this module cannot write into an answer (a caller's mistake)."""


@attrs.frozen
class Codec:
    """One payload type of an m-section: its ``a=rtpmap`` (``name`` lower-case), ``a=fmtp``
    parameters in order and the ``a=rtcp-fb`` values for it (or for ``*``)."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: tuple[tuple[str, str], ...] = ()
    feedback: tuple[str, ...] = ()

    def param(self, name: str) -> str | None:
        """The value of fmtp parameter ``name`` (case-insensitive), or ``None``."""
        lowered = name.lower()
        for key, value in self.fmtp:
            if key.lower() == lowered:
                return value
        return None

    def fmtp_text(self) -> str:
        """The fmtp parameters as written after ``a=fmtp:<pt> ``."""
        return ";".join(f"{key}={value}" if value else key for key, value in self.fmtp)


@attrs.frozen
class Media:
    """One m-section with its effective transport attributes (session ones inherited)."""

    kind: str
    port: int
    protocol: str
    mid: str | None
    direction: str
    codecs: tuple[Codec, ...]
    extmaps: tuple[tuple[int, str], ...]
    ice_ufrag: str | None
    ice_pwd: str | None
    fingerprints: tuple[tuple[str, str], ...]
    setup: str | None
    rtcp_mux: bool
    ssrcs: tuple[int, ...]
    ssrc_groups: tuple[tuple[str, tuple[int, ...]], ...]
    candidates: tuple[str, ...]
    rtcp_rsize: bool = False
    formats: tuple[str, ...] = ()
    """The m-line's format tokens as written (payload types, or ``webrtc-datachannel``)."""
    max_ptime: int | None = None
    """``a=maxptime`` (RFC 4566): the most milliseconds of media the peer wants in one packet
    (``None``: not said, or not a number: it is a hint, not a reason to refuse the offer)."""

    def codec(self, payload_type: int) -> Codec | None:
        for codec in self.codecs:
            if codec.payload_type == payload_type:
                return codec
        return None

    def extension(self, uri: str) -> int | None:
        """The extmap id of header extension ``uri``, or ``None``."""
        for number, value in self.extmaps:
            if value == uri:
                return number
        return None


@attrs.frozen
class SessionDescription:
    """A parsed offer (or answer): its m-sections in order, the BUNDLE group's mids and
    whether the sender is ICE-lite."""

    media: tuple[Media, ...]
    bundle: tuple[str, ...]
    ice_lite: bool


def parse_sdp(text: str | bytes) -> SessionDescription:
    """An offer read from ``text`` (CRLF or LF lines; see the module docstring for limits)."""
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if len(raw) > MAX_SDP_BYTES:
            raise SdpError(f"an SDP of {len(raw)} bytes is over {MAX_SDP_BYTES}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise SdpError(f"an SDP that is not UTF-8 ({error.reason} at byte {error.start})") from None
    else:
        if len(text) > MAX_SDP_BYTES:
            raise SdpError(f"an SDP over {MAX_SDP_BYTES} bytes")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise SdpError("an SDP that cannot be written as UTF-8 (a lone surrogate)") from None
        if size > MAX_SDP_BYTES:
            raise SdpError(f"an SDP of {size} bytes is over {MAX_SDP_BYTES}")
    control = _CONTROL.search(text)
    if control is not None:
        line = text.count("\n", 0, control.start()) + 1
        raise SdpError(f"SDP line {line} holds a control character {control.group()!r}")
    lines = text.split("\n")
    if len(lines) > MAX_LINES + 1:
        raise SdpError(f"an SDP of over {MAX_LINES} lines")
    parser = _Parser()
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"SDP line {number} is not <type>=<value>: {line[:40]!r}")
        try:
            parser.line(line[0], line[2:])
        except SdpError as error:
            raise SdpError(f"SDP line {number}: {error}") from None
    return parser.finish()


class _Section:
    """What is gathered for one m-section (or the session level) while parsing."""

    def __init__(self, kind: str = "", port: int = 0, protocol: str = "", formats: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.port = port
        self.protocol = protocol
        self.formats = formats
        self.attributes = 0
        self.mid: str | None = None
        self.direction: str | None = None
        self.rtpmap: dict[int, tuple[str, int, int]] = {}
        self.fmtp: dict[int, tuple[tuple[str, str], ...]] = {}
        self.feedback: dict[int | None, list[str]] = {}
        self.extmaps: list[tuple[int, str]] = []
        self.ice_ufrag: str | None = None
        self.ice_pwd: str | None = None
        self.fingerprints: list[tuple[str, str]] = []
        self.setup: str | None = None
        self.rtcp_mux = False
        self.rtcp_rsize = False
        self.max_ptime: int | None = None
        self.ssrcs: list[int] = []
        self.ssrc_groups: list[tuple[str, tuple[int, ...]]] = []
        self.candidates: list[str] = []
        self.bundle: tuple[str, ...] | None = None
        self.ice_lite = False


class _Parser:
    def __init__(self) -> None:
        self.session = _Section()
        self.sections: list[_Section] = []
        self.version_seen = False

    def line(self, kind: str, value: str) -> None:
        if not self.version_seen:
            if kind != "v" or value.strip() != "0":
                raise SdpError("an SDP starts with v=0")
            self.version_seen = True
            return
        if kind == "m":
            self.media(value)
        elif kind == "a":
            self.attribute(self.sections[-1] if self.sections else self.session, value)

    def media(self, value: str) -> None:
        if len(self.sections) == MAX_MEDIA:
            raise SdpError(f"over {MAX_MEDIA} m-sections")
        parts = value.split()
        if len(parts) < 3:
            raise SdpError("an m-line is <media> <port> <proto> <fmt>...")
        kind, port_text, protocol = parts[0], parts[1], parts[2]
        formats = tuple(parts[3:])
        if not _TOKEN.fullmatch(kind) or not _TOKEN.fullmatch(protocol.replace("/", "")):
            raise SdpError("an m-line with a malformed media or protocol")
        port = _integer(port_text.partition("/")[0], 0xFFFF, "port")
        if len(formats) > MAX_CODECS:
            raise SdpError(f"an m-line with over {MAX_CODECS} formats")
        self.sections.append(_Section(kind.lower(), port, protocol, formats))

    def attribute(self, section: _Section, value: str) -> None:
        section.attributes += 1
        if section.attributes > MAX_ATTRIBUTES:
            raise SdpError(f"over {MAX_ATTRIBUTES} attribute lines in one section")
        name, colon, rest = value.partition(":")
        name = name.strip().lower()
        rest = rest.strip()
        if name in DIRECTIONS and not colon:
            section.direction = name
        elif name == "mid":
            if not _MID.fullmatch(rest):
                raise SdpError("an a=mid that is not a token of at most 64 characters")
            section.mid = rest
        elif name == "rtpmap":
            self.rtpmap(section, rest)
        elif name == "fmtp":
            self.fmtp(section, rest)
        elif name == "rtcp-fb":
            pt_text, _, feedback = rest.partition(" ")
            key = None if pt_text == "*" else _integer(pt_text, 127, "payload type")
            values = section.feedback.setdefault(key, [])
            if len(values) >= MAX_ATTRIBUTES // 4:
                raise SdpError("too many a=rtcp-fb lines for one payload type")
            values.append(" ".join(feedback.split()).lower())
        elif name == "extmap":
            self.extmap(section, rest)
        elif name == "ice-ufrag":
            section.ice_ufrag = _ice(rest, "ice-ufrag")
        elif name == "ice-pwd":
            section.ice_pwd = _ice(rest, "ice-pwd")
        elif name == "fingerprint":
            if len(section.fingerprints) == MAX_FINGERPRINTS:
                raise SdpError(f"over {MAX_FINGERPRINTS} fingerprints")
            algorithm, _, digest = rest.partition(" ")
            digest = digest.strip().upper()
            if not _TOKEN.fullmatch(algorithm) or not _FINGERPRINT_HEX.fullmatch(digest):
                raise SdpError("a malformed a=fingerprint")
            section.fingerprints.append((algorithm.lower(), digest))
        elif name == "setup":
            setup = rest.lower()
            if setup not in ("actpass", "active", "passive", "holdconn"):
                raise SdpError(f"an unknown a=setup:{rest[:20]}")
            section.setup = setup
        elif name == "rtcp-mux" and not colon:
            section.rtcp_mux = True
        elif name == "rtcp-rsize" and not colon:
            section.rtcp_rsize = True
        elif name == "maxptime":
            section.max_ptime = int(rest) if rest.isascii() and rest.isdigit() and len(rest) <= 6 else None
        elif name == "ssrc":
            ssrc_text = rest.partition(" ")[0]
            ssrc = _integer(ssrc_text, 0xFFFFFFFF, "SSRC")
            if ssrc not in section.ssrcs:
                if len(section.ssrcs) == MAX_SSRCS:
                    raise SdpError(f"over {MAX_SSRCS} SSRCs in one section")
                section.ssrcs.append(ssrc)
        elif name == "ssrc-group":
            if len(section.ssrc_groups) == MAX_SSRCS:
                raise SdpError(f"over {MAX_SSRCS} SSRC groups in one section")
            parts = rest.split()
            if not parts or len(parts) > 1 + MAX_SSRCS or not _TOKEN.fullmatch(parts[0]):
                raise SdpError("a malformed a=ssrc-group")
            members = tuple(_integer(part, 0xFFFFFFFF, "SSRC") for part in parts[1:])
            section.ssrc_groups.append((parts[0], members))
        elif name == "candidate":
            if len(section.candidates) == MAX_CANDIDATES:
                raise SdpError(f"over {MAX_CANDIDATES} candidates in one section")
            section.candidates.append(rest)
        elif name == "group":
            semantics, _, mids = rest.partition(" ")
            if semantics.upper() == "BUNDLE" and section is self.session:
                section.bundle = tuple(mids.split())[:MAX_MEDIA]
        elif name == "ice-lite" and not colon:
            section.ice_lite = True

    def rtpmap(self, section: _Section, rest: str) -> None:
        pt_text, _, encoding = rest.partition(" ")
        payload_type = _integer(pt_text, 127, "payload type")
        parts = encoding.strip().split("/")
        if len(parts) not in (2, 3) or not _TOKEN.fullmatch(parts[0]):
            raise SdpError("an a=rtpmap is <pt> <name>/<clock rate>[/<channels>]")
        clock = _integer(parts[1], 10_000_000, "clock rate")
        channels = _integer(parts[2], 255, "channel count") if len(parts) == 3 else 1
        if payload_type not in section.rtpmap and len(section.rtpmap) >= MAX_CODECS:
            raise SdpError(f"over {MAX_CODECS} a=rtpmap lines")
        section.rtpmap[payload_type] = (parts[0].lower(), clock, channels)

    def fmtp(self, section: _Section, rest: str) -> None:
        pt_text, _, text = rest.partition(" ")
        payload_type = _integer(pt_text, 127, "payload type")
        pieces = [piece.strip() for piece in text.split(";") if piece.strip()]
        if len(pieces) > MAX_FMTP_PARAMETERS:
            raise SdpError(f"an a=fmtp with over {MAX_FMTP_PARAMETERS} parameters")
        parameters = []
        for piece in pieces:
            key, equals, value = piece.partition("=")
            parameters.append((key.strip(), value.strip()) if equals else (piece, ""))
        if payload_type not in section.fmtp and len(section.fmtp) >= MAX_CODECS:
            raise SdpError(f"over {MAX_CODECS} a=fmtp lines")
        section.fmtp[payload_type] = tuple(parameters)

    def extmap(self, section: _Section, rest: str) -> None:
        if len(section.extmaps) == MAX_EXTMAPS:
            raise SdpError(f"over {MAX_EXTMAPS} a=extmap lines")
        parts = rest.split()
        if len(parts) < 2:
            raise SdpError("an a=extmap is <id>[/<direction>] <uri>")
        number = _integer(parts[0].partition("/")[0], 255, "extmap id")
        if number == 0:
            raise SdpError(f"an extmap id of {number}")
        section.extmaps.append((number, parts[1]))

    def finish(self) -> SessionDescription:
        if not self.version_seen:
            raise SdpError("an empty SDP")
        session = self.session
        media = []
        for section in self.sections:
            codecs = []
            for token in section.formats:
                if not token.isdigit() or len(token) > 3 or int(token) > 127:
                    continue
                payload_type = int(token)
                mapped = section.rtpmap.get(payload_type) or _STATIC.get(payload_type)
                if mapped is None or any(codec.payload_type == payload_type for codec in codecs):
                    continue
                feedback = section.feedback.get(payload_type, []) + section.feedback.get(None, [])
                codecs.append(
                    Codec(
                        payload_type,
                        mapped[0],
                        mapped[1],
                        mapped[2],
                        section.fmtp.get(payload_type, ()),
                        tuple(dict.fromkeys(feedback)),
                    )
                )
            media.append(
                Media(
                    kind=section.kind,
                    port=section.port,
                    protocol=section.protocol,
                    mid=section.mid,
                    direction=section.direction or session.direction or "sendrecv",
                    codecs=tuple(codecs),
                    extmaps=tuple(section.extmaps),
                    ice_ufrag=section.ice_ufrag or session.ice_ufrag,
                    ice_pwd=section.ice_pwd or session.ice_pwd,
                    fingerprints=tuple(section.fingerprints or session.fingerprints),
                    setup=section.setup or session.setup,
                    rtcp_mux=section.rtcp_mux,
                    ssrcs=tuple(section.ssrcs),
                    ssrc_groups=tuple(section.ssrc_groups),
                    candidates=tuple(section.candidates),
                    rtcp_rsize=section.rtcp_rsize,
                    formats=section.formats,
                    max_ptime=section.max_ptime if section.max_ptime is not None else session.max_ptime,
                )
            )
        return SessionDescription(tuple(media), session.bundle or (), session.ice_lite)


def _integer(text: str, maximum: int, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > maximum:
        raise SdpError(f"a malformed {what}: {text[:20]!r}")
    return int(text)


def _ice(value: str, what: str) -> str:
    if not value or len(value) > MAX_ICE_CHARS or not value.isascii() or any(c.isspace() for c in value):
        raise SdpError(f"a malformed a={what}")
    return value


# --- the answer ---------------------------------------------------------------------------


@attrs.frozen
class Candidate:
    """One of our host candidates (``tcptype`` ``"passive"`` for ICE-TCP)."""

    foundation: str
    transport: str
    priority: int
    host: str
    port: int
    tcptype: str | None = None

    def sdp(self) -> str:
        """The value after ``a=candidate:``."""
        line = f"{self.foundation} 1 {self.transport} {self.priority} {self.host} {self.port} typ host"
        return line + (f" tcptype {self.tcptype}" if self.tcptype else "")


@attrs.frozen
class LocalEndpoint:
    """Our side of the transport: ICE credentials, the DTLS certificate's fingerprint
    (``"sha-256 AB:CD:..."``) and the host candidates announced."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str
    candidates: tuple[Candidate, ...]


@attrs.frozen
class VideoSource:
    """The stream's video as the kernel names it (``"h264"``, ``"hevc"``, ``"av1"``,
    ``"vp9"``) and, for H.264, the 6 hex digits of profile_idc, constraint flags, level_idc."""

    codec: str
    profile_level_id: str | None = None


@attrs.frozen
class Track:
    """One accepted m-section: the remote's chosen codec, our SSRC when we send on it, the
    offerer's SSRCs when it sends (RTX ones of an FID group left out), the mid extension's id
    and whether the remote asked for NACK and PLI with that codec."""

    mid: str
    kind: str
    codec: Codec
    send_ssrc: int | None
    remote_ssrcs: tuple[int, ...]
    mid_extension: int | None
    nack: bool
    pli: bool
    max_ptime: int | None = None
    """The offer's ``a=maxptime`` for this m-section (``None``: not said)."""


@attrs.frozen
class Answer:
    """The answer's text, its accepted tracks in m-line order and the remote's transport."""

    sdp: str
    tracks: tuple[Track, ...]
    remote_ufrag: str
    remote_pwd: str
    remote_fingerprints: tuple[tuple[str, str], ...]
    remote_setup: str


# H.264 profiles of RFC 6184 section 8.1 / RFC 7742, as (profile_idc, iop mask, iop value).
_H264_PATTERNS: Final = (
    (0x42, 0x4F, 0x40, "constrained-baseline"),
    (0x4D, 0x8F, 0x80, "constrained-baseline"),
    (0x58, 0xCF, 0xC0, "constrained-baseline"),
    (0x42, 0x4F, 0x00, "baseline"),
    (0x58, 0xCF, 0x80, "baseline"),
    (0x4D, 0xAF, 0x00, "main"),
    (0x64, 0xFF, 0x00, "high"),
    (0x64, 0xFF, 0x0C, "constrained-high"),
    (0xF4, 0xFF, 0x00, "high-444"),
)
# Which offered (decoder) profiles play a stream of each profile, the same one first.
_H264_PLAYS: Final = {
    "constrained-baseline": ("constrained-baseline", "baseline", "main", "constrained-high", "high", "high-444"),
    "baseline": ("baseline",),
    "main": ("main", "high", "high-444"),
    "constrained-high": ("constrained-high", "high", "high-444"),
    "high": ("high", "high-444"),
    "high-444": ("high-444",),
}


def h264_profile(profile_level_id: str) -> str | None:
    """The H.264 profile named by a ``profile-level-id`` (``"constrained-baseline"``,
    ``"baseline"``, ``"main"``, ``"constrained-high"``, ``"high"``, ``"high-444"``), or
    ``None`` when it is not 6 hex digits or matches none of them."""
    if len(profile_level_id) != 6 or not all(c in "0123456789abcdefABCDEF" for c in profile_level_id):
        return None
    profile_idc, iop = int(profile_level_id[0:2], 16), int(profile_level_id[2:4], 16)
    for idc, mask, value, name in _H264_PATTERNS:
        if profile_idc == idc and iop & mask == value:
            return name
    return None


def answer_whep(
    offer: SessionDescription,
    local: LocalEndpoint,
    *,
    video: VideoSource | None,
    audio: bool,
    ssrcs: Callable[[], int],
) -> Answer:
    """The answer to a WHEP (playback) offer: we send ``video`` and Opus audio (if ``audio``)."""
    if video is not None and video.codec not in ("h264", "hevc", "av1", "vp9", "vp8"):
        raise SdpUsageError(f"no SDP name for the video codec {video.codec!r}")
    if video is not None and video.codec == "h264" and video.profile_level_id is not None:
        if h264_profile(video.profile_level_id) is None:
            raise SdpUsageError(f"an H.264 profile-level-id of {video.profile_level_id!r} names no known profile")
    choices: list[Codec | None] = []
    taken: set[str] = set()
    for media in offer.media:
        codec = None
        if _usable(media, offer, ("recvonly", "sendrecv")) and media.kind not in taken:
            if media.kind == "video" and video is not None:
                codec = _whep_video(media, video)
                if codec is None:
                    raise NoCommonCodec(
                        f"the stream's video ({_describe_source(video)}) is not offered", _offered(offer)
                    )
            elif media.kind == "audio" and audio:
                codec = _pick(media, ("opus",))
        if codec is not None:
            taken.add(media.kind)
        choices.append(codec)
    return _answer(offer, local, choices, "sendonly", ssrcs)


def answer_whip(
    offer: SessionDescription,
    local: LocalEndpoint,
    *,
    video_codecs: Sequence[str] = ("h264", "hevc", "av1", "vp9"),
    audio_codecs: Sequence[str] = ("opus",),
) -> Answer:
    """The answer to a WHIP (publish) offer: we receive the first of ``video_codecs`` and of
    ``audio_codecs`` (kernel names, in order of preference) that the client offers."""
    video_names = tuple(_SDP_NAMES[name] for name in video_codecs if name in _SDP_NAMES)
    audio_names = tuple(_AUDIO_NAMES[name] for name in audio_codecs if name in _AUDIO_NAMES)
    choices: list[Codec | None] = []
    taken: set[str] = set()
    for media in offer.media:
        codec = None
        if _usable(media, offer, ("sendonly", "sendrecv")) and media.kind not in taken:
            if media.kind == "video":
                codec = _pick(media, video_names)
            elif media.kind == "audio":
                codec = _pick(media, audio_names)
        if codec is not None:
            taken.add(media.kind)
        choices.append(codec)
    return _answer(offer, local, choices, "recvonly", None)


def _usable(media: Media, offer: SessionDescription, directions: tuple[str, ...]) -> bool:
    """Whether ``media`` could be accepted at all: RTP over DTLS-SRTP, a mid (in the BUNDLE
    group when there is one), rtcp-mux, a direction we serve, a port."""
    return (
        media.kind in ("video", "audio")
        and media.protocol.upper().endswith("RTP/SAVPF")
        and media.mid is not None
        and (not offer.bundle or media.mid in offer.bundle)
        and media.rtcp_mux
        and media.direction in directions
        and media.port != 0
    )


def _pick(media: Media, names: tuple[str, ...]) -> Codec | None:
    """The first codec of ``media`` named ``names[0]`` (then ``names[1]``...) that we can use."""
    for name in names:
        candidates = [codec for codec in media.codecs if codec.name == name and _acceptable(codec)]
        if candidates:
            return min(candidates, key=lambda codec: _rank(codec, candidates))
    return None


def _acceptable(codec: Codec) -> bool:
    if codec.name == "h264":
        return codec.param("packetization-mode") == "1" and (
            codec.param("profile-level-id") is None or h264_profile(codec.param("profile-level-id") or "") is not None
        )
    if codec.name == "opus":
        return codec.clock_rate == 48000 and codec.channels == 2
    return codec.clock_rate == 90000


def _rank(codec: Codec, candidates: list[Codec]) -> tuple[int, int]:
    """Order among codecs of one name: the profile every player decodes first (H.264
    constrained baseline, the 8-bit 4:2:0 profile of the others), then the offer's order."""
    if codec.name == "h264":  # what every player decodes: constrained baseline
        preferred = h264_profile(codec.param("profile-level-id") or "42001f") == "constrained-baseline"
    else:
        profile = {"vp9": "profile-id", "av1": "profile", "h265": "profile-id"}.get(codec.name)
        default = {"vp9": "0", "av1": "0", "h265": "1"}.get(codec.name)
        preferred = profile is None or codec.param(profile) in (None, default)
    return (0 if preferred else 1, candidates.index(codec))


def _whep_video(media: Media, video: VideoSource) -> Codec | None:
    name = _SDP_NAMES[video.codec]
    if name != "h264" or video.profile_level_id is None:
        return _pick(media, (name,))
    stream = h264_profile(video.profile_level_id)
    plays = _H264_PLAYS.get(stream or "", ())
    candidates = [codec for codec in media.codecs if codec.name == "h264" and _acceptable(codec)]

    def rank(codec: Codec) -> tuple[int, int, int]:
        offered = h264_profile(codec.param("profile-level-id") or "42001f")
        asymmetry = codec.param("level-asymmetry-allowed") == "1"
        return (plays.index(offered or ""), 0 if asymmetry else 1, candidates.index(codec))

    fitting = [codec for codec in candidates if h264_profile(codec.param("profile-level-id") or "42001f") in plays]
    return min(fitting, key=rank) if fitting else None


def _describe_source(video: VideoSource) -> str:
    if video.profile_level_id is None:
        return video.codec
    return f"{video.codec} {h264_profile(video.profile_level_id) or 'unknown'} {video.profile_level_id}"


def _offered(offer: SessionDescription) -> tuple[str, ...]:
    described = []
    for media in offer.media:
        names = []
        for codec in media.codecs:
            label = _WRITTEN.get(codec.name, codec.name)
            profile = codec.param("profile-level-id")
            if profile is not None and codec.param("packetization-mode") == "1":
                label += f" {profile}"
            if label not in names and codec.name not in ("rtx", "red", "ulpfec", "flexfec-03"):
                names.append(label)
        described.append(f"{media.kind} ({media.direction}): {', '.join(names) or 'none'}")
    return tuple(described)


def _answer(
    offer: SessionDescription,
    local: LocalEndpoint,
    choices: list[Codec | None],
    direction: str,
    ssrcs: Callable[[], int] | None,
) -> Answer:
    if not local.candidates:
        raise SdpUsageError("an answer needs at least one candidate")
    algorithm, _, digest = local.fingerprint.partition(" ")
    if not algorithm or not _FINGERPRINT_HEX.fullmatch(digest.upper()):
        raise SdpUsageError(f"a malformed local fingerprint {local.fingerprint[:30]!r}")
    accepted = [media for media, codec in zip(offer.media, choices, strict=True) if codec is not None]
    if not accepted:
        raise NoCommonCodec("no section of the offer can be accepted", _offered(offer))
    first = accepted[0]
    if first.ice_ufrag is None or first.ice_pwd is None:
        raise SdpError("the offer has no a=ice-ufrag and a=ice-pwd")
    if not first.fingerprints:
        raise SdpError("the offer has no a=fingerprint")
    remote_setup = first.setup or "actpass"
    setup = "active" if remote_setup == "passive" else "passive"
    default = local.candidates[0]
    try:
        family = "IP6" if ipaddress.ip_address(default.host).version == 6 else "IP4"
    except ValueError:
        family = "IP4"
    session_id = int.from_bytes(hashlib.sha256(local.ice_ufrag.encode()).digest()[:7], "big")
    stream_id = f"{_CNAME}-{local.ice_ufrag}"
    lines = ["v=0", f"o=- {session_id} 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=ice-lite"]
    if offer.bundle:
        lines.append("a=group:BUNDLE " + " ".join(media.mid or "" for media in accepted))
    lines.append(f"a=msid-semantic: WMS {stream_id}" if ssrcs is not None else "a=msid-semantic: WMS")
    tracks = []
    for media, codec in zip(offer.media, choices, strict=True):
        if codec is None:
            formats = " ".join(media.formats) or "0"
            lines.append(f"m={media.kind} 0 {media.protocol} {formats}")
            lines.append(f"c=IN {family} {default.host}")
            if media.mid is not None:
                lines.append(f"a=mid:{media.mid}")
            lines.append("a=inactive")
            continue
        assert media.mid is not None
        lines += [
            f"m={media.kind} {default.port} {media.protocol} {codec.payload_type}",
            f"c=IN {family} {default.host}",
            f"a=mid:{media.mid}",
            f"a=ice-ufrag:{local.ice_ufrag}",
            f"a=ice-pwd:{local.ice_pwd}",
            f"a=fingerprint:{algorithm.lower()} {digest.upper()}",
            f"a=setup:{setup}",
            f"a={direction}",
        ]
        send_ssrc = ssrcs() & 0xFFFFFFFF if ssrcs is not None else None
        if send_ssrc is not None:
            lines.append(f"a=msid:{stream_id} {media.kind}")
        lines.append("a=rtcp-mux")
        if media.rtcp_rsize:
            lines.append("a=rtcp-rsize")
        mid_extension = media.extension(MID_EXTENSION)
        if mid_extension is not None:
            lines.append(f"a=extmap:{mid_extension} {MID_EXTENSION}")
        channels = f"/{codec.channels}" if media.kind == "audio" and codec.channels != 1 else ""
        lines.append(
            f"a=rtpmap:{codec.payload_type} {_WRITTEN.get(codec.name, codec.name)}/{codec.clock_rate}{channels}"
        )
        for feedback in FEEDBACK_ANSWERED:
            if feedback in codec.feedback:
                lines.append(f"a=rtcp-fb:{codec.payload_type} {feedback}")
        if codec.fmtp:
            lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp_text()}")
        if send_ssrc is not None:
            lines.append(f"a=ssrc:{send_ssrc} cname:{_CNAME}")
            lines.append(f"a=ssrc:{send_ssrc} msid:{stream_id} {media.kind}")
        for candidate in local.candidates:
            lines.append(f"a=candidate:{candidate.sdp()}")
        lines.append("a=end-of-candidates")
        rtx = {ssrc for semantics, group in media.ssrc_groups if semantics == "FID" for ssrc in group[1:]}
        tracks.append(
            Track(
                mid=media.mid,
                kind=media.kind,
                codec=codec,
                send_ssrc=send_ssrc,
                remote_ssrcs=tuple(ssrc for ssrc in media.ssrcs if ssrc not in rtx),
                mid_extension=mid_extension,
                nack="nack" in codec.feedback,
                pli="nack pli" in codec.feedback,
                max_ptime=media.max_ptime,
            )
        )
    return Answer(
        sdp="\r\n".join(lines) + "\r\n",
        tracks=tuple(tracks),
        remote_ufrag=first.ice_ufrag,
        remote_pwd=first.ice_pwd,
        remote_fingerprints=first.fingerprints,
        remote_setup=remote_setup,
    )
