"""The WebSocket opening handshake check (arcly_trio.protocols.http.websocket.handshake_problem):
what it accepts, the handshake library (wsproto) accepts too, so no accepted handshake fails
after routing (a repeated, empty Upgrade header did: the connection got no answer at all)."""

from __future__ import annotations

import h11
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.utilities import RemoteProtocolError

from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.protocols.http.websocket import handshake_problem, head_size, rebuild_request_head

GOOD = (
    ("host", "127.0.0.1"),
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
)


def request(headers: tuple[tuple[str, str], ...]) -> HttpRequest:
    return HttpRequest("GET", "/live/demo.flv", "/live/demo.flv", {}, headers)


def wsproto_accepts(headers: tuple[tuple[str, str], ...]) -> bool:
    head = b"GET /live/demo.flv HTTP/1.1\r\n" + b"".join(
        b"%s: %s\r\n" % (name.encode(), value.encode("latin-1")) for name, value in headers
    )
    server = WSConnection(ConnectionType.SERVER)
    try:
        server.receive_data(head + b"\r\n")
        return any(isinstance(event, Request) for event in server.events())
    except (RemoteProtocolError, h11.RemoteProtocolError, UnicodeError):  # Host is read as IDNA
        return False


def test_a_good_handshake_is_accepted_by_both() -> None:
    assert handshake_problem(request(GOOD)) is None
    assert wsproto_accepts(GOOD)


def test_a_repeated_empty_upgrade_header_is_refused_with_400() -> None:
    headers = (*GOOD, ("upgrade", ""))
    assert not wsproto_accepts(headers)
    assert handshake_problem(request(headers)) == (400, "the Upgrade header must be websocket (one Upgrade header)")


_EXTRA = st.tuples(
    st.sampled_from(["upgrade", "connection"]),
    st.sampled_from(["", "websocket", "WebSocket", "h2c", "Upgrade", "keep-alive", "keep-alive, Upgrade", "close"]),
)


@given(st.lists(_EXTRA, max_size=3), st.permutations(range(len(GOOD))))
@example([("upgrade", "")], list(range(len(GOOD))))
@example([("connection", "close")], list(range(len(GOOD))))
def test_whatever_the_check_accepts_the_handshake_library_accepts(
    extra: list[tuple[str, str]], order: list[int]
) -> None:
    headers = (*(GOOD[i] for i in order), *extra)
    if handshake_problem(request(headers)) is None:
        assert wsproto_accepts(headers), headers


@given(st.text(st.characters(max_codepoint=0xFF, exclude_characters="\r\n\x00"), min_size=1, max_size=12))
@example("\x80")
@example("xn--")
def test_whatever_host_the_check_accepts_the_handshake_library_reads(host: str) -> None:
    # found by the HTTP fuzz test: a Host of b"\x80" passed the check, then wsproto raised
    # UnicodeDecodeError (it reads Host as IDNA) after the play had started: no answer at all
    headers = (("host", host.strip() or "x"), *GOOD[1:])
    if handshake_problem(request(headers)) is None:
        assert wsproto_accepts(headers), headers


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
_VALUE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ;=/.,0123456789", max_size=40).map(str.strip)


@given(
    method=st.sampled_from([b"GET", b"HEAD", b"OPTIONS", b"DELETE"]),
    target=st.text(alphabet="abc/?=&%.0123456789", min_size=1, max_size=60).map(lambda t: "/" + t),
    version=st.sampled_from([b"1.0", b"1.1"]),
    headers=st.lists(st.tuples(_TOKEN, _VALUE), max_size=8),
)
def test_head_size_counts_the_rebuilt_head(method: bytes, target: str, version: bytes, headers: list) -> None:
    """The HTTP worker measures a whole head for its 431 limit with head_size, without building
    the bytes; it must count exactly what rebuild_request_head builds."""
    headers = [(name, value) for name, value in headers if name not in ("host", "content-length", "transfer-encoding")]
    fields = [("host", "x"), *headers] if version == b"1.1" else headers
    event = h11.Request(method=method, target=target, http_version=version, headers=fields)
    assert head_size(event) == len(rebuild_request_head(event))
