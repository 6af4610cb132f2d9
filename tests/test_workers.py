"""``arcly-trio serve --workers 2`` as users run it: one supervisor, two worker processes.

ffmpeg publishes to the shared RTMP port (the kernel hands the connection to one worker); 20
players connect to the same port (``SO_REUSEPORT`` spreads them over both workers) and every one
receives the stream: those on the other worker through the local relay over Unix sockets. Each
worker answers ``/api/streams`` for both. Then the worker without the publisher is killed: the
supervisor logs it and starts it again, the players on the other worker keep receiving, and new
players (some on the restarted worker) receive the stream too. A second publish of the same key
is refused whichever worker it lands on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import trio

from arcly_trio.clients import open_rtmp_player, open_rtmp_publisher
from arcly_trio.core.errors import RemoteRefused
from tests.test_rtmp_interop import publisher

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
_RTMP = re.compile(r"RTMP listening on [\d.]+:(\d+) \(2 workers")
_HTTP = re.compile(r"HTTP listening on [\d.]+:(\d+) \(2 workers")
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


class Supervised:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.rtmp = 0
        self.http = 0
        self.pids: dict[int, int] = {}

    async def read(self) -> None:
        assert self.process.stderr is not None
        pending = b""
        async for chunk in self.process.stderr:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                if match := _RTMP.search(line):
                    self.rtmp = int(match.group(1))
                if match := _HTTP.search(line):
                    self.http = int(match.group(1))
                if match := _STARTED.search(line):
                    self.pids[int(match.group(1))] = int(match.group(2))

    async def wait_log(self, text: str, count: int = 1) -> None:
        while sum(text in line for line in self.lines) < count:
            assert self.process.returncode is None, "\n".join(self.lines)
            await trio.sleep(0.05)


async def api(port: int, path: str) -> dict:  # type: ignore[type-arg]
    from arcly_trio.clients.http import get_json_bytes

    return json.loads(await get_json_bytes(f"http://{HOST}:{port}{path}"))


async def watch(url: str, counts: list[int], index: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    async with open_rtmp_player(url) as player:
        task_status.started()
        while batch := await player.next_batch():
            counts[index] += sum(1 for frame in batch if frame.kind.value == "video" and not frame.config)


async def test_twenty_players_across_two_workers_and_a_worker_restart() -> None:
    command = [sys.executable, "-m", "arcly_trio", "serve", "--workers", "2", "--host", HOST, "--rtmp-port", "0",
               "--http-port", "0", "--pull-idle", "2"]
    process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                               cwd=os.path.dirname(os.path.dirname(__file__)))
    server = Supervised(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.read)
            with trio.fail_after(90):
                await server.wait_log("arcly-trio ready", 2)
                url = f"rtmp://{HOST}:{server.rtmp}/live/cam"
                async with publisher(url):
                    while not (await api(server.http, "/api/streams"))["streams"]:
                        await trio.sleep(0.1)
                    counts = [0] * 20
                    async with trio.open_nursery() as players:
                        for index in range(20):
                            await players.start(watch, url, counts, index)
                        while min(counts) < 30:
                            await trio.sleep(0.1)
                        document = await api(server.http, "/api/streams")
                        assert document["workers_answered"] == 2
                        stream = document["apps"][0]["streams"][0]
                        assert stream["subscribers"]["total"] == 20
                        served = {entry["worker"]: entry for entry in stream["workers"]}
                        assert set(served) == {0, 1}  # the players landed on both workers
                        origin = next(w for w, entry in served.items() if not entry["relayed"])
                        other = 1 - origin
                        on_origin = served[origin]["viewers"]
                        # A second publish of the same key is refused, whichever worker it reaches.
                        for _ in range(4):
                            with pytest.raises(RemoteRefused):
                                async with open_rtmp_publisher(url):
                                    pass
                        # Kill the worker that relays: the supervisor restarts it.
                        before = list(counts)
                        os.kill(server.pids[other], signal.SIGKILL)
                        await server.wait_log(f"worker {other} (pid")
                        await server.wait_log(f"worker {other} started", 2)
                        await trio.sleep(1)
                        alive = [i for i in range(20) if counts[i] > before[i] + 10]
                        assert len(alive) >= on_origin  # the origin worker's players kept playing
                        # New players, spread over both workers again, all receive the stream.
                        await server.wait_log("arcly-trio ready", 3)
                        fresh = [0] * 10
                        async with trio.open_nursery() as more:
                            for index in range(10):
                                await more.start(watch, url, fresh, index)
                            while min(fresh) < 30:
                                await trio.sleep(0.1)
                            more.cancel_scope.cancel()
                        document = await api(server.http, "/api/health")
                        assert document["workers_answered"] == 2
                        players.cancel_scope.cancel()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await process.wait() == 0
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
