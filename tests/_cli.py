"""``arcly-trio serve`` in a subprocess, as users run it: started on port 0, the bound ports read
from its log lines, stopped with SIGTERM (then SIGKILL) and reaped.

Error policy: a server that exits before it listens fails the test with its output.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests._ffmpeg import publisher
from tests._net import HOST

ROOT = Path(__file__).resolve().parent.parent


_LISTENING = re.compile(r"RTMP listening on [\d.]+:(\d+)")


_HTTP_LISTENING = re.compile(r"HTTP listening on [\d.]+:(\d+)")


def serve_command(*options: str) -> list[str]:
    return [sys.executable, "-m", "arcly_trio", "serve", *options]


class CliServer:
    """A running ``arcly-trio serve``: its process, its port, its log lines so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.port = 0
        self.ready = trio.Event()
        self.http_port: int | None = None

    def url(self, path: str) -> str:
        return f"rtmp://{HOST}:{self.port}/{path}"

    def log(self) -> str:
        return "\n".join(self.lines)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        pending = b""
        async for chunk in self.process.stderr:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.port = int(match.group(1))
                match = _HTTP_LISTENING.search(line)
                if match:
                    self.http_port = int(match.group(1))
                if "arcly-trio ready" in line:
                    self.ready.set()

    async def wait_log(self, text: str) -> None:
        """Wait until a log line contains ``text``."""
        while not any(text in line for line in self.lines):
            if self.process.returncode is not None:
                raise AssertionError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            await trio.sleep(0.02)

    async def stop(self, signum: int = signal.SIGTERM, within: float = 5.0) -> int:
        """Send ``signum`` and return the exit code; fails unless it exits ``within`` seconds."""
        self.process.send_signal(signum)
        with trio.fail_after(within):
            return await self.process.wait()


EPHEMERAL_PORTS = (
    "--rtmp-port", "0", "--http-port", "0", "--webrtc-port", "0", "--srt-port", "0", "--rtsp-port", "0",
)  # fmt: skip
"""Every listener that is on by default, on a port of the system's choosing (so tests never
bind a protocol's default port): a new protocol's port option goes here."""


@asynccontextmanager
async def cli_server(*options: str) -> AsyncIterator[CliServer]:
    """``arcly-trio serve --host 127.0.0.1 --rtmp-port 0 --http-port 0 *options``, ready."""
    args = serve_command(
        "--host",
        HOST,
        *EPHEMERAL_PORTS,
        *options,
    )
    process = await trio.lowlevel.open_process(
        args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    server = CliServer(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._read)
            with trio.fail_after(10):
                await server.ready.wait()
            assert server.port
            try:
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
    finally:
        if process.returncode is None:  # pragma: no cover - cancelled before the finally ran
            process.kill()


async def publish_exit_code(url: str) -> int:
    """Publish a short test source to ``url``; the ffmpeg exit code (non-zero when refused)."""
    async with publisher(url, seconds=5) as pub:
        with trio.fail_after(10):
            return await pub.wait()
