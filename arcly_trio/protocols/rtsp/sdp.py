"""SDP for RTSP (RFC 8866, RFC 7826 appendix D): describe a stream's tracks, read a peer's.

A server answers ``DESCRIBE`` with :func:`build_sdp` of the tracks :func:`describe_track` made
from the stream's configuration frames (the kernel's codec name and decoder configuration
record): H.264 with ``sprop-parameter-sets`` (RFC 6184), H.265 with ``sprop-vps/sps/pps``
(RFC 7798), AAC as ``mpeg4-generic`` AAC-hbr with ``config=`` (RFC 3640), Opus (RFC 7587) and AV1
(the AOM RTP payload format). A publisher's ``ANNOUNCE`` body, or a camera's ``DESCRIBE`` answer,
is read by :func:`parse_sdp` into :class:`SdpTrack`\\ s with the same fields, the decoder
configuration rebuilt from the ``fmtp`` parameters where they carry it (``avcC``, ``hvcC``, the
AudioSpecificConfig, an ``OpusHead``); G.711 (``PCMU``/``PCMA``, static payload types 0 and 8)
is recognised for cameras. :func:`control_uri` resolves a track's ``a=control`` against the
presentation URL (RFC 7826 §18.31 / RFC 2326 C.1.1).

Attacker's view: the text is at most what the message reader allows (64 KiB); at most
:data:`MAX_MEDIA` media sections and :data:`MAX_FMTP` ``fmtp`` parameters per section are read;
base64/hex parameter values are decoded only up to the body's size, and a configuration that
does not parse is dropped (the track then waits for in-band parameter sets), never trusted.

Error policy: :func:`parse_sdp` raises :class:`SdpError` (an
:class:`~arcly_trio.protocols.rtsp.messages.RtspError` answering 400, or 415 for an SDP with no
usable track when asked) for text that is not SDP; unknown codecs come back as tracks with
``codec=""`` for the caller to skip. :func:`describe_track` raises ``ValueError`` for a codec it
cannot describe.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Final, Literal
from urllib.parse import urljoin

import attrs

from arcly_trio.media.codecs.aac import parse_audio_specific_config
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.h264 import avc_config, parse_avc_config
from arcly_trio.media.codecs.hevc import hevc_config_record, parse_hevc_config
from arcly_trio.media.codecs.opus import opus_head, parse_opus_head
from arcly_trio.protocols.rtsp.messages import RtspError

__all__ = [
    "MAX_MEDIA",
    "MAX_FMTP",
    "SdpError",
    "SdpTrack",
    "SessionSdp",
    "build_sdp",
    "control_uri",
    "describe_track",
    "parse_sdp",
]

MAX_MEDIA: Final = 16
MAX_FMTP: Final = 32

_ENCODINGS: Final = {
    "h264": "h264",
    "h265": "hevc",
    "mpeg4-generic": "aac",
    "opus": "opus",
    "av1": "av1",
    "pcma": "pcma",
    "pcmu": "pcmu",
}
_STATIC: Final = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1)}


class SdpError(RtspError):
    """A session description that cannot be read."""


@attrs.frozen
class SdpTrack:
    """One media section.

    Attributes:
        kind: ``"video"`` or ``"audio"`` (other media kinds are skipped by the parser).
        codec: the kernel's codec name (``h264``, ``hevc``, ``aac``, ``opus``, ``av1``, ``pcma``,
            ``pcmu``), or ``""`` for an encoding the server does not carry.
        encoding: the ``rtpmap`` encoding name as written (``H264``, ``MPEG4-GENERIC``...).
        payload_type: the RTP payload type (the section's first format).
        clock_rate: the RTP clock.
        channels: audio channels from the ``rtpmap``, else ``None``.
        control: the ``a=control`` value as written (``""`` if absent).
        fmtp: the ``a=fmtp`` parameters, names lower-cased, in order.
        config: the kernel's decoder configuration record for the track, when the SDP carries
            it (``avcC``, ``hvcC``, AudioSpecificConfig, ``OpusHead``), else ``None``.
    """

    kind: Literal["video", "audio"]
    codec: str
    encoding: str
    payload_type: int
    clock_rate: int
    channels: int | None = None
    control: str = ""
    fmtp: tuple[tuple[str, str], ...] = ()
    config: bytes | None = None

    def parameter(self, name: str) -> str | None:
        """The ``fmtp`` parameter ``name`` (any case), or None."""
        wanted = name.lower()
        for key, value in self.fmtp:
            if key == wanted:
                return value
        return None


@attrs.frozen
class SessionSdp:
    """A parsed session description: its tracks, the session-level control and name."""

    tracks: tuple[SdpTrack, ...]
    control: str = ""
    name: str = ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def describe_track(codec: str, config: bytes | None, *, payload_type: int, control: str) -> SdpTrack:
    """The SDP track of a kernel track: ``codec`` and its configuration record (see the module
    docstring). Raises ``ValueError`` for a codec (or a configuration) it cannot describe."""
    try:
        return _describe(codec, config, payload_type, control)
    except CodecError as exc:
        raise ValueError(f"cannot describe {codec}: {exc}") from None


def _describe(codec: str, config: bytes | None, payload_type: int, control: str) -> SdpTrack:
    if codec == "h264":
        fmtp: list[tuple[str, str]] = [("packetization-mode", "1")]
        if config:
            avc = parse_avc_config(config)
            if avc.sps:
                fmtp.append(("profile-level-id", avc.sps[0][1:4].hex().upper()))
            fmtp.append(("sprop-parameter-sets", ",".join(_b64(unit) for unit in avc.sps + avc.pps)))
        return SdpTrack("video", "h264", "H264", payload_type, 90000, None, control, tuple(fmtp), config)
    if codec == "hevc":
        fmtp = []
        if config:
            hevc = parse_hevc_config(config)
            for name, units in (("sprop-vps", hevc.vps), ("sprop-sps", hevc.sps), ("sprop-pps", hevc.pps)):
                if units:
                    fmtp.append((name, ",".join(_b64(unit) for unit in units)))
        return SdpTrack("video", "hevc", "H265", payload_type, 90000, None, control, tuple(fmtp), config)
    if codec == "av1":
        return SdpTrack("video", "av1", "AV1", payload_type, 90000, None, control, (), config)
    if codec == "aac":
        if not config:
            raise ValueError("AAC needs its AudioSpecificConfig to be described")
        asc = parse_audio_specific_config(config)
        channels = asc.channels or 2
        fmtp = [
            ("profile-level-id", "1"),
            ("mode", "AAC-hbr"),
            ("sizelength", "13"),
            ("indexlength", "3"),
            ("indexdeltalength", "3"),
            ("config", config.hex().upper()),
        ]
        return SdpTrack(
            "audio", "aac", "MPEG4-GENERIC", payload_type, asc.sample_rate, channels, control, tuple(fmtp), config
        )
    if codec == "opus":
        channels = parse_opus_head(config).channels if config else 2
        fmtp = [("sprop-stereo", "1" if channels >= 2 else "0")]
        return SdpTrack("audio", "opus", "opus", payload_type, 48000, 2, control, tuple(fmtp), config)
    if codec in ("pcma", "pcmu"):
        static = 8 if codec == "pcma" else 0
        return SdpTrack("audio", codec, codec.upper(), static, 8000, 1, control, (), None)
    raise ValueError(f"RTSP cannot describe codec {codec!r}")


def build_sdp(
    tracks: Sequence[SdpTrack], *, address: str = "127.0.0.1", name: str = "arcly-trio", session_id: int = 0
) -> bytes:
    """The SDP of a presentation made of ``tracks`` (an aggregate control ``*``)."""
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=- {session_id} 0 IN {family} {address}",
        f"s={_clean(name) or '-'}",
        f"c=IN {family} {'::' if family == 'IP6' else '0.0.0.0'}",
        "t=0 0",
        "a=control:*",
        "a=range:npt=0-",
    ]
    for track in tracks:
        lines.append(f"m={track.kind} 0 RTP/AVP {track.payload_type}")
        rtpmap = f"{track.encoding}/{track.clock_rate}"
        if track.kind == "audio" and track.channels:
            rtpmap += f"/{track.channels}"
        lines.append(f"a=rtpmap:{track.payload_type} {rtpmap}")
        if track.fmtp:
            lines.append(f"a=fmtp:{track.payload_type} " + ";".join(f"{k}={v}" for k, v in track.fmtp))
        if track.control:
            lines.append(f"a=control:{_clean(track.control)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _clean(text: str) -> str:
    return "".join(ch for ch in text if ch >= " " and ch != "\x7f")


def control_uri(base: str, control: str) -> str:
    """The URL of a track: ``control`` when absolute, else resolved against ``base`` (the
    ``Content-Base`` or the request URL, taken as a directory as clients do)."""
    if not control or control == "*":
        return base
    if "://" in control:
        return control
    if not base.endswith("/"):
        base += "/"
    return urljoin(base, control)


def parse_sdp(text: str | bytes) -> SessionSdp:
    """Read a session description (see the module docstring)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8") from None
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("not an SDP (no v= line first)")
    session_control = ""
    name = ""
    sections: list[dict[str, object]] = []
    current: dict[str, object] | None = None
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("malformed SDP line")
        kind, value = line[0], line[2:]
        if kind == "m":
            if len(sections) >= MAX_MEDIA:
                raise SdpError(f"more than {MAX_MEDIA} media sections")
            parts = value.split()
            if len(parts) < 4:
                raise SdpError("malformed m= line")
            current = {"media": parts[0], "formats": parts[3:], "rtpmap": {}, "fmtp": {}, "control": ""}
            sections.append(current)
            continue
        if kind == "s" and current is None:
            name = value
        if kind != "a":
            continue
        attribute, _, attr_value = value.partition(":")
        if attribute == "control":
            if current is None:
                session_control = attr_value.strip()
            else:
                current["control"] = attr_value.strip()
        elif current is not None and attribute in ("rtpmap", "fmtp"):
            pt, _, rest = attr_value.partition(" ")
            table = current[attribute]
            assert isinstance(table, dict)
            if len(table) < MAX_MEDIA:
                table[pt.strip()] = rest.strip()
    tracks = [track for track in (_track(section) for section in sections) if track is not None]
    return SessionSdp(tuple(tracks), session_control, name)


def _track(section: dict[str, object]) -> SdpTrack | None:
    media = section["media"]
    if media not in ("video", "audio"):
        return None
    formats = section["formats"]
    assert isinstance(formats, list)
    first = formats[0]
    if not first.isdigit() or int(first) > 127:
        raise SdpError("malformed payload type")
    payload_type = int(first)
    rtpmap = section["rtpmap"]
    fmtp_table = section["fmtp"]
    assert isinstance(rtpmap, dict) and isinstance(fmtp_table, dict)
    mapping = rtpmap.get(first)
    channels: int | None = None
    if mapping:
        pieces = mapping.split("/")
        encoding = pieces[0]
        try:
            clock = int(pieces[1]) if len(pieces) > 1 else 90000
            channels = int(pieces[2]) if len(pieces) > 2 else None
        except ValueError:
            raise SdpError("malformed rtpmap") from None
        if not 0 < clock <= 1_000_000 or (channels is not None and not 0 < channels <= 64):
            raise SdpError("rtpmap clock or channels out of range")
    elif payload_type in _STATIC:
        encoding, clock, channels = _STATIC[payload_type]
    else:
        encoding, clock = "", 90000
    fmtp: list[tuple[str, str]] = []
    for item in str(fmtp_table.get(first, "")).split(";")[:MAX_FMTP]:
        key, _, val = item.strip().partition("=")
        if key:
            fmtp.append((key.strip().lower(), val.strip()))
    codec = _ENCODINGS.get(encoding.lower(), "")
    kind: Literal["video", "audio"] = "video" if media == "video" else "audio"
    control = section["control"]
    assert isinstance(control, str)
    track = SdpTrack(kind, codec, encoding, payload_type, clock, channels, control, tuple(fmtp))
    return attrs.evolve(track, config=_config(track))


def _unb64(value: str) -> list[bytes]:
    units = []
    for part in value.split(","):
        part = part.strip()
        if part:
            units.append(base64.b64decode(part + "=" * (-len(part) % 4), validate=True))
    return units


def _config(track: SdpTrack) -> bytes | None:
    try:
        if track.codec == "h264":
            units = _unb64(track.parameter("sprop-parameter-sets") or "")
            sps = [u for u in units if u and u[0] & 0x1F == 7]
            pps = [u for u in units if u and u[0] & 0x1F == 8]
            return avc_config(sps, pps) if sps and pps else None
        if track.codec == "hevc":
            vps = _unb64(track.parameter("sprop-vps") or "")
            sps = _unb64(track.parameter("sprop-sps") or "")
            pps = _unb64(track.parameter("sprop-pps") or "")
            return hevc_config_record(vps, sps, pps) if sps and pps else None
        if track.codec == "aac":
            mode = (track.parameter("mode") or "").lower()
            config = bytes.fromhex(track.parameter("config") or "")
            if mode != "aac-hbr" or not config:
                return None
            parse_audio_specific_config(config)
            return config
        if track.codec == "opus":
            stereo = track.parameter("sprop-stereo") == "1" or (track.channels or 1) >= 2
            return opus_head(2 if stereo else 1)
    except (CodecError, ValueError, binascii.Error, IndexError):
        return None
    return None
