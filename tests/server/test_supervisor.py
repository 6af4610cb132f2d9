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

import pytest
import trio

from arcly_trio.clients import open_rtmp_player, open_rtmp_publisher
from arcly_trio.core.errors import RemoteRefused
from tests._cli import CliServer, cli_server
from tests._ffmpeg import publisher

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"

_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def worker_pids(server: CliServer) -> dict[int, int]:
    """The latest pid of each worker, from the supervisor's log."""
    pids = {}
    for line in server.lines:
        if match := _STARTED.search(line):
            pids[int(match.group(1))] = int(match.group(2))
    return pids


async def wait_count(server: CliServer, text: str, count: int) -> None:
    while sum(text in line for line in server.lines) < count:
        assert server.process.returncode is None, server.log()
        await trio.sleep(0.05)


async def players(url: str, nursery: trio.Nursery, count: int) -> list[int]:
    """``count`` players of ``url`` (started); each one's video frames received so far."""
    counts = [0] * count
    for index in range(count):
        await nursery.start(watch, url, counts, index)
    return counts


async def api(port: int, path: str) -> dict:  # type: ignore[type-arg]
    from arcly_trio.clients.http import get_json_bytes

    return json.loads(await get_json_bytes(f"http://{HOST}:{port}{path}"))


async def watch(url: str, counts: list[int], index: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    async with open_rtmp_player(url) as player:
        task_status.started()
        while batch := await player.next_batch():
            counts[index] += sum(1 for frame in batch if frame.kind.value == "video" and not frame.config)


async def test_twenty_players_across_two_workers_and_a_worker_restart() -> None:
    async with cli_server("--workers", "2", "--pull-idle", "2") as server:
        with trio.fail_after(90):
            await wait_count(server, " ready (pid", 2)
            url = server.url("live/cam")
            async with publisher(url), trio.open_nursery() as nursery:
                while not (await api(server.http_port, "/api/streams"))["streams"]:
                    await trio.sleep(0.1)
                counts = await players(url, nursery, 20)
                while min(counts) < 30:
                    await trio.sleep(0.1)
                document = await api(server.http_port, "/api/streams")
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
                os.kill(worker_pids(server)[other], signal.SIGKILL)
                await server.wait_log(f"worker {other} (pid")
                await wait_count(server, f"worker {other} started", 2)
                await trio.sleep(1)
                alive = [i for i in range(20) if counts[i] > before[i] + 10]
                assert len(alive) >= on_origin  # the origin worker's players kept playing
                # New players, spread over both workers again, all receive the stream.
                await wait_count(server, f"worker {other} ready (pid", 2)  # restarted, listening again
                fresh = await players(url, nursery, 10)
                while min(fresh) < 30:
                    await trio.sleep(0.1)
                assert (await api(server.http_port, "/api/health"))["workers_answered"] == 2
                nursery.cancel_scope.cancel()
        assert await server.stop(within=15) == 0


async def test_workers_outlive_neither_a_killed_supervisor_nor_a_quiet_minute() -> None:
    """The workers stay up (nothing restarts them behind our back), and stop by themselves
    once their supervisor is killed without a word."""
    async with cli_server("--workers", "2") as server:
        with trio.fail_after(40):
            await wait_count(server, " ready (pid", 2)
            pids = worker_pids(server)
            await trio.sleep(15)  # longer than trio's idle worker threads live
            assert worker_pids(server) == pids and not any("restarting" in line for line in server.lines)
            server.process.kill()
            await server.process.wait()
            while any(os.path.exists(f"/proc/{pid}") and _running(pid) for pid in pids.values()):
                await trio.sleep(0.1)


async def test_ready_is_said_once_every_worker_listens_and_the_workers_directory_is_quiet() -> None:
    """Before: the supervisor said "ready" 4 s before the workers listened, each worker said
    "arcly-trio ready" and its URLs again, and each logged "cluster node ... registered in the
    directory" without any cluster."""
    async with cli_server("--workers", "2") as server:  # it returns at "arcly-trio ready"
        with trio.fail_after(40):
            ready = [i for i, line in enumerate(server.lines) if "arcly-trio ready" in line]
            assert len(ready) == 1 and "(2 workers)" in server.lines[ready[0]]
            before = server.lines[: ready[0]]
            for index in (0, 1):
                assert any(f"w{index} INFO arcly_trio.rtmp: RTMP listening on" in line for line in before)
                assert any(f"worker {index} ready (pid" in line for line in before)
            # --rtsp-port 0 is resolved once, by the supervisor: both workers share that port
            # (before: each picked its own, and the banner named none).
            rtsp = {re.search(r"w\d INFO arcly_trio.rtsp: RTSP listening on [\d.]+:(\d+)", line) for line in before}
            ports = {match.group(1) for match in rtsp if match}
            assert len(ports) == 1, ports
            await server.wait_log("RTSP rtsp://")
            port = ports.pop()
            assert any(f"RTSP rtsp://127.0.0.1:{port}/{{app}}/{{stream}}" in line for line in server.lines)
            await trio.sleep(1)
            assert await server.stop(within=15) == 0
    assert sum("arcly-trio ready" in line for line in server.lines) == 1
    assert not any("registered in the directory" in line or "is gone" in line for line in server.lines)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


async def test_every_worker_lists_and_kicks_every_workers_sessions_and_merges_metrics() -> None:
    """``/api/sessions`` on the shared port lists the players of both workers (ids ``w0-``,
    ``w1-``, relays left out); a kick of a session held by either worker ends that player,
    whichever worker answered the request, and its log line says who asked; ``/metrics`` has both workers' series (a ``worker``
    label, ``arcly_workers_answered 2``); the API token holds on every worker. Plays need a signed
    URL: the relays between workers (over their private sockets) are trusted, so the players that
    land on the worker without the stream play too."""
    import time

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from arcly_trio.ops import sign_url

    async with cli_server(
        "--workers", "2", "--demo", "--api-token", "k3y", "--sign-secret", "s3cret", "--sign-actions", "play"
    ) as server:
        await wait_count(server, " ready (pid", 2)
        await server.wait_log("demo stream: ffplay")
        url = sign_url(f"rtmp://{HOST}:{server.port}/live/demo", "s3cret", int(time.time()) + 600)
        headers = {"authorization": "Bearer k3y"}
        base = f"http://{HOST}:{server.http_port}"
        async with trio.open_nursery() as nursery, httpx.AsyncClient(headers=headers) as client:
            # The banner says where the demo plays as soon as the server is ready, before the
            # demo has published: wait for the stream itself (a loaded machine showed the race).
            with trio.fail_after(30):
                while not (await client.get(f"{base}/api/streams")).json()["streams"]:
                    await trio.sleep(0.1)
            counts = await players(url, nursery, 12)
            with trio.fail_after(30):
                while not all(counts):
                    await trio.sleep(0.1)
                assert (await httpx.AsyncClient().get(f"{base}/api/sessions")).status_code == 401
                document = (await client.get(f"{base}/api/sessions")).json()
                plays = [s for s in document["sessions"] if s["role"] == "play"]
                assert len(plays) == 12 and document["workers_answered"] == 2
                assert all(s["protocol"] == "rtmp" for s in plays)
                by_worker = {s["id"].partition("-")[0]: s for s in plays}
                assert set(by_worker) == {"w0", "w1"}
                for session in by_worker.values():
                    answer = await client.delete(f"{base}/api/sessions/{session['id']}")
                    assert answer.status_code == 200 and answer.json()["kicked"]["id"] == session["id"]
                while (
                    sum(1 for s in (await client.get(f"{base}/api/sessions")).json()["sessions"] if s["role"] == "play")
                    != 10
                ):
                    await trio.sleep(0.1)
                # Each kick's log line says who asked, on the worker that held the session too.
                for session in by_worker.values():
                    await server.wait_log(
                        f"session {session['id']} (play of live/demo over rtmp from 127.0.0.1) "
                        "kicked by api-token holder at 127.0.0.1"
                    )
                text = (await client.get(f"{base}/metrics")).text
            families = {family.name: family for family in text_string_to_metric_families(text)}
            assert families["arcly_workers_answered"].samples[0].value == 2
            kicks = [
                s
                for s in families["arcly_sessions_kicked"].samples
                if s.name.endswith("_total") and s.labels["role"] == "play"
            ]  # (every role has its series, at 0 until a kick)
            assert sorted((s.labels["worker"], s.value) for s in kicks) == [("0", 1), ("1", 1)]
            subscribers = {
                s.labels["worker"]: s.value
                for s in families["arcly_subscribers"].samples
                if s.labels["protocol"] == "rtmp"
            }
            assert sum(subscribers.values()) == 10
            nursery.cancel_scope.cancel()


async def test_a_whip_delete_reaching_another_worker_ends_the_session_on_its_own() -> None:
    """Under ``--workers 2`` a WHIP session's resource id says its worker (``w0-``, ``w1-``); a
    ``DELETE`` that lands on the other worker (one keep-alive connection deletes them all) is
    passed on to the right one, and every session ends."""
    import httpx

    from tests._webrtc import sdp_offer

    async with cli_server("--workers", "2") as server:
        await wait_count(server, " ready (pid", 2)
        base = f"http://{HOST}:{server.http_port}"
        locations: dict[str, str] = {}
        with trio.fail_after(60):
            n = 0
            while {"w0", "w1"} - {location.rsplit("/", 1)[1].partition("-")[0] for location in locations.values()}:
                async with httpx.AsyncClient() as client:  # a new connection: either worker may take it
                    answer = await client.post(
                        f"{base}/live/s{n}/whip",
                        content=sdp_offer(send=True),
                        headers={"content-type": "application/sdp"},
                    )
                assert answer.status_code == 201, answer.text
                locations[f"s{n}"] = answer.headers["location"]
                n += 1
                assert n < 40, "every connection landed on one worker"
            async with httpx.AsyncClient() as client:  # one connection: one worker answers every DELETE
                for location in locations.values():
                    assert (await client.delete(f"{base}{location}")).status_code == 200, location
                    assert (await client.delete(f"{base}{location}")).status_code == 404  # gone, wherever it was
                while any(
                    s["protocol"] == "whip" for s in (await client.get(f"{base}/api/sessions")).json()["sessions"]
                ):
                    await trio.sleep(0.1)


def test_worker_argv_gives_every_worker_the_supervisors_rtsp_and_rtsps_ports() -> None:
    """Before: ``--rtsp-port 0`` / ``--rtsps-port 0`` went to each worker as given, so each
    listened on a port of its own; the supervisor now resolves them and passes them on."""
    from arcly_trio.server.supervisor import worker_argv

    argv = worker_argv(
        ["serve", "--rtsp-port", "0", "--rtsps-port", "0", "--workers", "2"],
        rtmp_port=1935,
        http_port=8080,
        run_dir="/run/x",
        index=1,
        count=2,
        rtsp_port=8554,
        rtsps_port=8322,
    )
    assert "--workers" not in argv
    # argparse keeps the last: the resolved ports come after the user's.
    assert argv[len(argv) - 1 - argv[::-1].index("--rtsp-port") + 1] == "8554"
    assert argv[len(argv) - 1 - argv[::-1].index("--rtsps-port") + 1] == "8322"
    off = worker_argv(["serve", "--rtsp-port", "-1"], rtmp_port=1, http_port=2, run_dir="/r", index=0, count=2)
    assert off.count("--rtsp-port") == 1 and "--rtsps-port" not in off
