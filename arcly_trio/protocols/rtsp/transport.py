"""The RTSP ``Transport`` header (RFC 2326 §12.39, RFC 7826 §18.54): parse and format.

A client's ``SETUP`` lists the transports it accepts, best first, separated by commas: e.g.
``RTP/AVP/TCP;unicast;interleaved=0-1`` (RTP inside the RTSP connection, ``$``-framed) or
``RTP/AVP;unicast;client_port=5000-5001`` (RTP and RTCP over UDP to those ports). The server
answers with the one it chose, completed (``server_port``, ``ssrc``...). :func:`parse_transport`
reads every spec into a :class:`TransportSpec`; :func:`format_transport` writes one.

Attacker's view: at most :data:`MAX_SPECS` specs and :data:`MAX_PARAMETERS` parameters per spec
are read; every port is checked to be 1-65535 and every interleaved channel 0-255. The header's
``destination`` is parsed and returned but a server must not act on it: RTP goes to the address
the request came from (RFC 7826 §18.54), so ``SETUP`` cannot aim a server at a third party.

Error policy: :func:`parse_transport` raises :class:`TransportError` (an
:class:`~arcly_trio.protocols.rtsp.messages.RtspError` answering 461 Unsupported Transport) for a
header it cannot read; a spec of an unknown profile is returned with ``protocol=""`` for the
caller to skip. :func:`format_transport` raises ``ValueError`` for a spec it cannot write.
"""

from __future__ import annotations

from typing import Final

import attrs

from arcly_trio.protocols.rtsp.messages import RtspError

__all__ = ["MAX_PARAMETERS", "MAX_SPECS", "TransportError", "TransportSpec", "format_transport", "parse_transport"]

MAX_SPECS: Final = 8
MAX_PARAMETERS: Final = 16


class TransportError(RtspError):
    """A ``Transport`` header that cannot be read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 461)


@attrs.frozen
class TransportSpec:
    """One transport: ``protocol`` ``"udp"`` or ``"tcp"`` (``""`` for one not understood).

    Attributes:
        profile: the transport as written (``RTP/AVP``, ``RTP/AVP/TCP``, ``RTP/AVP/UDP``...).
        unicast: ``False`` when the spec says ``multicast``.
        interleaved: the RTP and RTCP channels of a TCP transport.
        client_port: the client's RTP and RTCP UDP ports.
        server_port: the server's RTP and RTCP UDP ports (in an answer).
        ssrc: the sender's SSRC (in an answer).
        mode: ``"play"`` or ``"record"`` (lower-cased, unquoted), when given.
        destination: as written; for information only (see the module docstring).
    """

    profile: str
    protocol: str
    unicast: bool = True
    interleaved: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    ssrc: int | None = None
    mode: str | None = None
    destination: str | None = None


def _pair(value: str, low: int, high: int, what: str) -> tuple[int, int]:
    first, dash, second = value.partition("-")
    if len(value) > 16:
        raise TransportError(f"malformed {what}")
    try:
        a = int(first)
        b = int(second) if dash else a + 1
    except ValueError:
        raise TransportError(f"malformed {what}") from None
    if not (low <= a <= high and low <= b <= high):
        raise TransportError(f"{what} out of range")
    return a, b


def parse_transport(value: str) -> tuple[TransportSpec, ...]:
    """Every transport spec of a ``Transport`` header, in the client's order of preference."""
    specs = [part.strip() for part in value.split(",") if part.strip()]
    if not specs:
        raise TransportError("empty Transport header")
    if len(specs) > MAX_SPECS:
        raise TransportError(f"more than {MAX_SPECS} transports")
    return tuple(_spec(spec) for spec in specs)


def _spec(text: str) -> TransportSpec:
    parts = [part.strip() for part in text.split(";")]
    if len(parts) > MAX_PARAMETERS + 1:
        raise TransportError(f"more than {MAX_PARAMETERS} transport parameters")
    profile = parts[0]
    upper = profile.upper()
    if upper in ("RTP/AVP", "RTP/AVP/UDP"):
        protocol = "udp"
    elif upper == "RTP/AVP/TCP":
        protocol = "tcp"
    else:
        protocol = ""
    fields: dict[str, object] = {}
    unicast = True
    for parameter in parts[1:]:
        name, equals, val = parameter.partition("=")
        name = name.strip().lower()
        val = val.strip()
        if name == "multicast":
            unicast = False
        elif name == "interleaved" and equals:
            fields["interleaved"] = _pair(val, 0, 255, "interleaved")
        elif name in ("client_port", "server_port") and equals:
            fields[name] = _pair(val, 1, 65535, name)
        elif name == "ssrc" and equals:
            try:
                fields["ssrc"] = int(val[:8], 16)
            except ValueError:
                raise TransportError("malformed ssrc") from None
        elif name == "mode" and equals:
            fields["mode"] = val.strip('"').lower()
        elif name == "destination" and equals:
            fields["destination"] = val[:64]
    return TransportSpec(profile, protocol, unicast, **fields)  # type: ignore[arg-type]


def format_transport(spec: TransportSpec) -> str:
    """One spec as a ``Transport`` value (the server's answer, or a client's request)."""
    parts = [spec.profile, "unicast" if spec.unicast else "multicast"]
    if spec.destination is not None:
        parts.append(f"destination={spec.destination}")
    for name in ("interleaved", "client_port", "server_port"):
        pair = getattr(spec, name)
        if pair is not None:
            a, b = pair
            if not (0 <= a <= 65535 and 0 <= b <= 65535):
                raise ValueError(f"{name} {pair} out of range")
            parts.append(f"{name}={a}-{b}")
    if spec.ssrc is not None:
        parts.append(f"ssrc={spec.ssrc & 0xFFFFFFFF:08X}")
    if spec.mode is not None:
        parts.append(f"mode={spec.mode.upper()}")
    text = ";".join(parts)
    if any(ch in text for ch in "\r\n,"):
        raise ValueError("a Transport value cannot hold CR, LF or a comma")
    return text
