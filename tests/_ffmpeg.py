"""ffmpeg and ffprobe as real clients: a publisher of lavfi test sources, a player that decodes to
``framemd5`` (one line per decoded frame), any tool as a running process, and probes.

Error policy: a missing tool fails in CI and skips elsewhere (``tests._tools``); a tool that
exits early or reports an error fails the test with its stderr.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import IO, Any

import trio

from tests._tools import require_tool


def publish_args(url: str, *, gop: int = 30, seconds: float | None = None) -> list[str]:
    """ffmpeg publishing a 320x240 30 fps H.264 test pattern and a 440 Hz AAC tone in real time."""
    args = [
        require_tool("ffmpeg"),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
    ]
    if seconds is not None:
        args += ["-t", f"{seconds:g}"]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "flv",
        url,
    ]
    return args


def play_args(url: str) -> list[str]:
    """ffmpeg playing ``url`` and writing one line per *decoded* frame (framemd5)."""
    return [
        require_tool("ffmpeg"),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-i",
        url,
        "-f",
        "framemd5",
        "-",
    ]


class Tool:
    """A running ffmpeg/ffprobe: its process, its stdout lines as they come, its stderr."""

    def __init__(self, process: trio.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._stderr = stderr

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def wait(self) -> int:
        return await self.process.wait()

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def on_line(self, line: str) -> None:
        self.lines.append(line)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                self.on_line(line.decode(errors="replace"))
        if pending:
            self.on_line(pending.decode(errors="replace"))


class Player(Tool):
    """An ffmpeg player writing framemd5: counts decoded video and audio frames."""

    def __init__(self, process: trio.Process, stderr: IO[bytes]) -> None:
        super().__init__(process, stderr)
        self.media_types: dict[str, str] = {}
        self.dimensions: str | None = None
        self.video = 0
        self.audio = 0

    def on_line(self, line: str) -> None:
        if line.startswith("#media_type"):
            index, _, kind = line[len("#media_type") :].partition(":")
            self.media_types[index.strip()] = kind.strip()
        elif line.startswith("#dimensions"):
            self.dimensions = line.partition(":")[2].strip()
        elif line and not line.startswith("#"):
            kind = self.media_types.get(line.partition(",")[0].strip())
            if kind == "video":
                self.video += 1
            elif kind == "audio":
                self.audio += 1

    async def wait_frames(self, video: int, audio: int) -> None:
        """Wait until it has decoded at least this many video and audio frames."""
        while self.video < video or self.audio < audio:
            if not self.running:
                raise AssertionError(
                    f"player exited ({self.returncode}) after {self.video} video and {self.audio} "
                    f"audio frames: {self.stderr()}"
                )
            await trio.sleep(0.02)

    async def keeps_decoding(self, frames: int = 15) -> None:
        """Prove the player is alive: ``frames`` more video and audio frames decoded from now."""
        await self.wait_frames(self.video + frames, self.audio + frames)


@asynccontextmanager
async def run_tool(args: Sequence[str], kind: type[Tool] = Tool) -> AsyncIterator[Any]:
    """Start ``args``; on exit stop it (SIGTERM, then SIGKILL after 5 s) and reap it."""
    with tempfile.TemporaryFile() as stderr:
        process = await trio.lowlevel.open_process(
            list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
        tool = kind(process, stderr)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tool._read)
                try:
                    yield tool
                finally:
                    with trio.CancelScope(shield=True):
                        if process.returncode is None:
                            process.terminate()
                            with trio.move_on_after(5):
                                await process.wait()
                        if process.returncode is None:
                            process.kill()
                            await process.wait()
        finally:
            if process.returncode is None:  # pragma: no cover - cancelled before the finally ran
                process.kill()


def publisher(url: str, **options: Any) -> Any:
    return run_tool(publish_args(url, **options))


def player(url: str) -> Any:
    return run_tool(play_args(url), Player)


async def ffprobe_packets(url: str, count: int) -> list[tuple[int, str]]:
    """``(dts, flags)`` of the first ``count`` video packets ffprobe reads from ``url``."""
    args = [
        require_tool("ffprobe"),
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=dts,flags",
        "-of",
        "csv=p=0",
        "-read_intervals",
        f"%+#{count}",
        url,
    ]
    result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    packets = []
    for line in result.stdout.decode().split():
        dts, _, flags = line.partition(",")
        packets.append((int(dts), flags))
    return packets


async def probe_streams(url: str, *options: str) -> list[dict[str, Any]]:
    """The streams ffprobe finds at ``url`` (``codec_type``, ``codec_name``, ``width``,
    ``height``), audio before video; ``options`` go before the URL (``-rw_timeout``...)."""
    args = [
        require_tool("ffprobe"),
        "-v",
        "error",
        *options,
        "-show_entries",
        "stream=codec_type,codec_name,width,height",
        "-of",
        "json",
        url,
    ]
    result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    streams: list[dict[str, Any]] = json.loads(result.stdout)["streams"]
    return sorted(streams, key=lambda stream: stream["codec_type"])
