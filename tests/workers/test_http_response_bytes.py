"""Whole responses the HTTP worker writes past h11 (arcly_trio.workers.http.exchange.response_bytes):
byte for byte what h11 writes for them, and refused (``None``: h11 writes it) for a field h11
would refuse, so a handler's bad header still cannot inject a line."""

from __future__ import annotations

import h11
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.workers.http.exchange import client_keeps_alive, reason_phrase, response_bytes

_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=16).map(str.encode)
_VALUE = st.text(alphabet="abcxyz ;=/.,0123456789\t", max_size=30).map(lambda v: v.strip(" \t").encode())


def h11_bytes(method: bytes, status: int, fields: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"%s / HTTP/1.1\r\nHost: x\r\n\r\n" % method)
    assert isinstance(conn.next_event(), h11.Request)
    data = conn.send(h11.Response(status_code=status, headers=fields, reason=reason_phrase(status)))
    if body and method != b"HEAD":
        data += conn.send(h11.Data(data=body))
    return data + conn.send(h11.EndOfMessage())


@given(
    method=st.sampled_from([b"GET", b"HEAD"]),
    status=st.sampled_from([200, 201, 206, 400, 401, 404, 405, 429, 500, 503]),
    extra=st.lists(st.tuples(_NAME, _VALUE), max_size=5),
    body=st.binary(max_size=64),
    close=st.booleans(),
)
def test_whole_responses_are_what_h11_writes(
    method: bytes, status: int, extra: list[tuple[bytes, bytes]], body: bytes, close: bool
) -> None:
    extra = [(name, value) for name, value in extra if name not in (b"content-length", b"connection", b"host")]
    extra = [(name, value) for name, value in extra if name != b"transfer-encoding"]
    fields = [(b"server", b"arcly-trio"), *([(b"connection", b"close")] if close else [])]
    fields += [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body)), *extra]
    ours = response_bytes(status, fields, b"" if method == b"HEAD" else body)
    expected = h11_bytes(method, status, fields, body)
    assert ours == expected


def test_a_field_h11_would_refuse_is_left_to_h11() -> None:
    base = [(b"content-length", b"0")]
    assert response_bytes(200, [*base, (b"location", b"/a\r\nset-cookie: x=1")], b"") is None
    assert response_bytes(200, [*base, (b"bad name", b"x")], b"") is None
    assert response_bytes(200, [*base, (b"x", b" padded")], b"") is None
    assert response_bytes(200, [*base, (b"x", b"nul\x00")], b"") is None


def test_keep_alive_is_judged_as_h11_does_or_more_cautiously() -> None:
    def request(version: bytes, *headers: tuple[bytes, bytes]) -> h11.Request:
        fields = [(b"host", b"x"), *headers] if version == b"1.1" else list(headers)
        return h11.Request(method=b"GET", target=b"/", http_version=version, headers=fields)

    assert client_keeps_alive(request(b"1.1"))
    assert client_keeps_alive(request(b"1.1", (b"connection", b"keep-alive")))
    assert not client_keeps_alive(request(b"1.1", (b"connection", b"Close")))
    assert not client_keeps_alive(request(b"1.1", (b"connection", b"upgrade, close")))
    assert not client_keeps_alive(request(b"1.0"))
    assert not client_keeps_alive(request(b"1.0", (b"connection", b"keep-alive")))
