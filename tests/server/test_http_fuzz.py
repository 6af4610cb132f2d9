"""Every HTTP route of a running ``arcly-trio serve``, fuzzed: no request gets a 500 or a traceback.

Issue 18 ("Done when"): hypothesis drives random request paths (each route's shape with random
names, segments and ids, percent-encoded or not, and free paths), query strings (the keys the
routes read: ``token``, ``sign``, ``api_token``, ``_HLS_msn``... with random values, and random
keys) and headers (WebSocket handshakes, tokens, ``Origin``, ``Range``, proxy headers... with
random values; ``arcly_session`` ids and cookies too) at one ``serve`` process, started once with port 0 and the routes ``serve`` has:
HLS and LL-HLS playlists, parts and segments (names read from the live playlist too), DASH,
HTTP-FLV, WebSocket-FLV, the frame API's WebSocket routes, the JSON API, the pages, ``/metrics``,
with the built-in demo stream live, a publish token, an API token, per-stream metrics, an audit
log and a pull relay to an upstream that is not there. Each request's answer must be a
response whose status is not ``500`` (``503`` only for what is documented: a blocking playlist
reload that waited in vain, a busy server), and when the server has stopped its log must hold
no traceback and no ``ERROR`` line.

A modest number of examples keeps it within seconds; the client is a plain blocking socket (the
server is another process), reading a response head only (a live body is not waited for).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._cli import EPHEMERAL_PORTS
from tests._net import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
API_TOKEN = "fuzz-api-token"
PUBLISH_TOKEN = "fuzz-publish-token"
_HTTP_PORT = re.compile(r"HTTP listening on [\d.]+:(\d+)")
_DOCUMENTED_503 = (b"did not come in time", b"busy", b"stopping", b"is starting")


@contextmanager
def serve(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``arcly-trio serve`` with most of its routes and plugins on: (HTTP port, its log file)."""
    dead = free_port()  # a port where no upstream listens, for the pull relay
    log = tmp_path / "serve.log"
    args = [
        sys.executable,
        "-m",
        "arcly_trio",
        "serve",
        "--host",
        "127.0.0.1",
        *EPHEMERAL_PORTS,
        "--demo",
        "--publish-token",
        PUBLISH_TOKEN,
        "--api-token",
        API_TOKEN,
        # a publish takes the token or a signed URL: random ?sign=/?jwt= values on /ingest are parsed
        "--sign-secret",
        "fuzz-sign-secret",
        "--sign-actions",
        "publish",
        "--auth-max-delay",
        "0.05",
        "--metrics-per-stream",
        "--audit",
        str(tmp_path / "audit.jsonl"),
        "--pull",
        f"rtmp://127.0.0.1:{dead}/{{app}}/{{stream}}",
        "--log-level",
        "info",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=output)
    try:
        deadline = time.monotonic() + 20
        while "arcly-trio ready" not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        found = _HTTP_PORT.search(log.read_text(errors="replace"))
        assert found is not None
        yield int(found.group(1)), log
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def exchange(port: int, head: bytes, timeout: float = 15.0) -> tuple[int, bytes]:
    """Send a request head; the status and the answer's head (and, for a ``503`` to anything
    but ``HEAD``, its body: the reason), or ``(0, what came)`` if no head came."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
        found = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
        status = int(found.group(1)) if found and b"\r\n\r\n" in answer else 0
        length = re.search(rb"(?im)^content-length: *(\d{1,6})\r$", answer.partition(b"\r\n\r\n")[0])
        if status == 503 and length and not head.startswith(b"HEAD "):
            while len(answer.partition(b"\r\n\r\n")[2]) < int(length.group(1)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    return status, answer


# --- strategies ---------------------------------------------------------------------------------

TEMPLATES = [
    "/",
    "/api/health",
    "/api/streams",
    "/api/sessions",
    "/api/sessions/{id}",
    "/api/server",
    "/metrics",
    "/watch/{app}/{stream}",
    "/publish/{app}/{stream}",
    "/pages/{name}",
    "/{app}/{stream}.flv",
    "/{app}/{stream}/frames",
    "/{app}/{stream}/ingest",
    "/{app}/{stream}/index.m3u8",
    "/{app}/{stream}/video.m3u8",
    "/{app}/{stream}/audio.m3u8",
    "/{app}/{stream}/index.mpd",
    "/{app}/{stream}/{segment}",
    "{free}",
]
WORDS = [
    "live",
    "demo",
    "x",
    "",
    ".",
    "..",
    "%2e%2e",
    "a b",
    "w0-abc",
    "w²-x",
    "${jndi}",
    "<script>",
    "é",
    "\u202e",
    "common.js",
    "index.html",
    "style.css",
    "0.ts",
    "x.m4s",
    "init.mp4",
    "a.b.c",
    "-1",
    "9" * 30,
]
QUERY_KEYS = [
    "token",
    "sign",
    "jwt",
    "api_token",
    "_HLS_msn",
    "_HLS_part",
    "_HLS_skip",
    "scope",
    "server",
    "autostart",
    "codec",
    "unmute",
    "arcly_session",
]
HEADER_NAMES = [
    "host",
    "origin",
    "authorization",
    "range",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "access-control-request-method",
    "access-control-request-headers",
    "x-forwarded-for",
    "forwarded",
    "accept",
    "user-agent",
    "if-none-match",
    "cookie",
]
TEXT = st.text(max_size=40)
HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)


def _encoded(text: str, raw: bool) -> str:
    """A path piece as a client might send it: percent-encoded, or (when it is plain ASCII
    with nothing h11 refuses) as it is."""
    if raw and text.isascii() and all(33 <= ord(c) < 127 and c not in "?#" for c in text):
        return text
    return quote(text, safe="%")


@st.composite
def targets(draw: st.DrawFn, segments: list[str]) -> str:
    template = draw(st.sampled_from(TEMPLATES))
    piece = st.one_of(st.sampled_from(WORDS), TEXT)
    values = {
        "app": draw(st.one_of(st.just("live"), piece)),
        "stream": draw(st.one_of(st.just("demo"), piece)),
        "id": draw(piece),
        "name": draw(piece),
        "segment": draw(st.one_of(st.sampled_from(segments or ["x.m4s"]), piece)),
    }
    raw = draw(st.booleans())
    if template == "{free}":
        path = "/" + "/".join(_encoded(part, raw) for part in draw(st.lists(piece, max_size=5)))
    else:
        path = re.sub(r"\{(\w+)\}", lambda m: _encoded(values[m.group(1)], raw), template)
    pairs = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(QUERY_KEYS), TEXT),
                st.one_of(
                    st.sampled_from(
                        [
                            API_TOKEN,
                            PUBLISH_TOKEN,
                            "1",
                            "0",
                            "-1",
                            "²",
                            "",
                            "²-" + "a" * 32,
                            "9999999999-" + "0" * 32,
                            "A" * 16,
                            "w0-" + "_" * 16,
                        ]
                    ),
                    st.integers(-10, 10**20).map(str),
                    TEXT,
                ),
            ),
            max_size=4,
        )
    )
    if not pairs:
        return path
    return path + "?" + "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in pairs)


@st.composite
def heads(draw: st.DrawFn, segments: list[str]) -> bytes:
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "OPTIONS", "DELETE", "POST", "PUT"]))
    headers: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)):  # HTTP/1.1 needs a Host; sometimes it is missing
        headers.append(("host", draw(st.one_of(st.just("127.0.0.1"), st.just("localhost:8080"), HEADER_VALUE))))
    if draw(st.booleans()):  # a WebSocket handshake, whole or in part
        handshake = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", draw(st.sampled_from(["arcly.frames.v1", "chat", ""]))),
        ]
        headers += handshake if draw(st.booleans()) else draw(st.lists(st.sampled_from(handshake), unique=True))
    if draw(st.booleans()):
        headers.append(("authorization", draw(st.sampled_from([f"Bearer {API_TOKEN}", "Bearer x", "Basic", ""]))))
    headers += draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), HEADER_VALUE), max_size=3))
    if draw(st.integers(0, 5)) == 0:  # a session cookie, well-formed or not
        headers.append(
            ("cookie", draw(st.sampled_from(["arcly_session=" + "A" * 16, "arcly_session=;", "a=b; arcly_session=x"])))
        )
    target = draw(targets(segments))
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value.strip()}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_no_request_to_any_route_gets_a_500_or_a_traceback(tmp_path: Path) -> None:
    with serve(tmp_path) as (port, log):
        _, playlist = exchange(port, b"GET /live/demo/video.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 15  # the first segment takes 2 s
        while b".m4s" not in playlist and time.monotonic() < deadline:
            time.sleep(0.2)
            _, playlist = exchange(port, b"GET /live/demo/video.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
        segments = sorted(set(re.findall(r"[A-Za-z0-9_.-]+\.(?:m4s|mp4)", playlist.decode(errors="replace"))))
        assert segments, playlist  # the demo is live: its real segments and parts are fuzzed too
        answered: list[int] = []

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(head=heads(segments))
        def one_request(head: bytes) -> None:
            status, answer = exchange(port, head)
            assert status, (head, answer[:300])  # an answer, whatever the request
            assert status != 500 and (
                status < 500 or (status == 503 and any(reason in answer for reason in _DOCUMENTED_503))
            ), (head, answer[:300])
            answered.append(status)

        one_request()
        assert len(set(answered)) >= 6, sorted(set(answered))  # it reached many kinds of answers
        assert {200, 400, 404} <= set(answered), sorted(set(answered))
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[text.index("Traceback") - 300 :][:3000]
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert not errors, errors[:5]
