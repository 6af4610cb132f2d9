"""A real HTTP hook server for the tests: the standard library's ``ThreadingHTTPServer``.

It is not ours (so it proves our httpx client speaks HTTP to an independent server), runs in a
daemon thread on 127.0.0.1 and an ephemeral port, and answers by path:

* ``/allow``: 200; ``/deny``: 403 ``"no such key"``; ``/redirect/NAME``: 302 ``Location: NAME``;
* ``/broken``: 500 with a traceback in the body (a hook service with a bug);
* ``/slow/SECONDS``: sleeps, then 200 (a hook that is too slow);
* ``/huge``: 200 with a 10 MB body (our client reads a bounded prefix only);
* ``/events``: 204 (notifications).

Every request's JSON body is recorded in :attr:`HookServer.calls` as ``(path, document)``.
:func:`dead_url` gives a URL where nothing listens; :func:`blackhole` a port that accepts
connections and never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests._net import free_port


class HookServer:
    """The hook server (see the module docstring)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                size = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(size) if size else b""
                try:
                    document = json.loads(body) if body else {}
                except ValueError:
                    document = {"raw": body.decode(errors="replace")}
                with owner.lock:
                    owner.calls.append((self.path, document))
                path = self.path
                if path.startswith("/slow/"):
                    time.sleep(float(path.rsplit("/", 1)[1]))
                    self._answer(200, b"ok")
                elif path == "/deny":
                    self._answer(403, b"no such key")
                elif path.startswith("/broken"):
                    self._answer(500, b"Traceback (most recent call last): db password=hunter2 at 10.0.0.5")
                elif path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("location", path[len("/redirect/") :])
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif path == "/huge":
                    self._answer(200, b"x" * 10_000_000)
                elif path == "/events":
                    self._answer(204, b"")
                else:
                    self._answer(200, b"ok")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def documents(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [document for called, document in self.calls if called == path]


@contextmanager
def hook_server() -> Iterator[HookServer]:
    server = HookServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def dead_url() -> str:
    """A URL on a port where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}/hook"


@contextmanager
def blackhole() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
