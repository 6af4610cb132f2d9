"""Running it for real, against real clients: ``arcly-trio serve`` in a subprocess, ffmpeg and
ffprobe as publishers and players, the standard library's HTTP server as the hook.

What each test proves:

* ffmpeg publishing through an ``--on-publish`` hook: allowed (and the hook got the app, stream,
  query, address and protocol), denied (ffmpeg fails, the log says why), slow (refused at the
  hook timeout while another publisher gets in meanwhile: the slow hook stalls no one), dead
  (refused at once), redirected (ffprobe plays the renamed stream);
* Node-Media-Server signed URLs from ``arcly-trio sign``: a viewer's (the default) accepted for
  RTMP and HTTP-FLV play (ffprobe) and refused for publishing; a streamer's (``--action publish``
  with ``--publish-sign-secret``) publishes; refused expired, for another stream and unsigned
  (RTMP and HTTP 401/403);
* ``/metrics`` parsed with ``prometheus_client.parser`` matches what is live (one publisher, one
  HTTP-FLV player of ffmpeg, the bytes it was given);
* a SIGHUP reload adds an application while ffmpeg plays a stream of another one: the player
  keeps decoding, and ffmpeg publishes to the new application;
* ffmpeg publishes over ``rtmps://`` (TLS, a certificate the test made with trustme) and
  ffprobe plays it back over ``https://`` HTTP-FLV;
* kicking an ffmpeg player with ``DELETE /api/sessions/{id}`` (API token required) ends it;
* a configuration file with a wrong type stops the server with the file, line and key.
"""

from __future__ import annotations

import json
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests._cli import ROOT, cli_server, publish_exit_code, serve_command
from tests._ffmpeg import player, probe_streams, publisher
from tests._hooks import dead_url, hook_server
from tests._net import HOST
from tests._tools import require_tool

pytestmark = pytest.mark.interop


async def api(
    port: int, method: str, path: str, token: str | None = None, scheme: str = "http", verify: Any = True
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(verify=verify) as client:
        with trio.fail_after(10):
            return await client.request(method, f"{scheme}://{HOST}:{port}{path}", headers=headers)


async def sign(url: str, secret: str, *extra: str) -> str:
    result = await trio.run_process(
        [sys.executable, "-m", "arcly_trio", "sign", url, "--secret", secret, *extra],
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
    )
    return result.stdout.decode().strip()


async def test_ffmpeg_publishes_through_the_on_publish_hook() -> None:
    with hook_server() as hooks, trio.fail_after(90):
        async with cli_server("--on-publish", hooks.url("/allow"), "--hook-timeout", "1") as server:
            async with publisher(server.url("live/cam?token=abc"), seconds=10) as pub:
                await server.wait_log("publishing live/cam")
                assert {s["codec_name"] for s in await probe_streams(server.url("live/cam"))} == {"h264", "aac"}
                assert pub.running
            document = hooks.documents("/allow")[0]
            assert (
                document["action"],
                document["app"],
                document["stream"],
                document["query"],
                document["address"],
                document["protocol"],
            ) == ("publish", "live", "cam", {"token": "abc"}, "127.0.0.1", "rtmp")
        async with cli_server("--on-publish", hooks.url("/deny")) as server:
            assert await publish_exit_code(server.url("live/cam")) != 0
            await server.wait_log("refused: publish of live/cam over rtmp: on_publish hook answered 403: no such key")
        async with cli_server(
            "--on-publish", hooks.url("/redirect/public"), "--on-play", hooks.url("/allow")
        ) as server:
            async with publisher(server.url("live/secret-key"), seconds=10):
                await server.wait_log("publish of live/secret-key renamed to live/public")
                assert len(await probe_streams(server.url("live/public"))) == 2


async def test_a_slow_or_dead_publish_hook_refuses_and_stalls_no_one() -> None:
    with hook_server() as hooks, trio.fail_after(90):
        async with cli_server(
            "--on-publish", hooks.url("/slow/30"), "--on-play", hooks.url("/allow"), "--hook-timeout", "3"
        ) as server:
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                refused: list[int] = []

                async def slow_publisher() -> None:
                    refused.append(await publish_exit_code(server.url("live/cam")))

                nursery.start_soon(slow_publisher)
                with trio.fail_after(5):
                    while not hooks.documents("/slow/30"):
                        await trio.sleep(0.05)
                # Meanwhile a player is asked about (allowed by its hook, then told there is no
                # such stream) at once: the slow hook holds only the client waiting for it.
                args = ["ffprobe", "-v", "error", server.url("live/nothing")]
                probe = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
                assert probe.returncode != 0 and b"not published" in probe.stderr
                assert hooks.documents("/allow")[0]["action"] == "play"
                assert trio.current_time() - started < 3
            assert refused and refused[0] != 0
            await server.wait_log("on_publish hook timed out after 3 s")
        async with cli_server("--on-publish", dead_url()) as server:
            started = trio.current_time()
            assert await publish_exit_code(server.url("live/cam")) != 0
            await server.wait_log("on_publish hook failed: ConnectError")
            assert trio.current_time() - started < 10


async def test_signed_urls_for_rtmp_and_http() -> None:
    secret, publish_secret = "nodemedia2017privatekey", "for-streamers-only"
    streamer_options = ("--action", "publish", "--publish-sign-secret", publish_secret)
    with trio.fail_after(90):
        async with cli_server("--sign-secret", secret, "--publish-sign-secret", publish_secret) as server:
            viewer = await sign(server.url("live/cam"), secret, "--expires", "60")
            streamer = await sign(server.url("live/cam"), secret, *streamer_options, "--expires", "60")
            for url in (viewer, streamer):
                assert re.fullmatch(rf"rtmp://{HOST}:\d+/live/cam\?sign=\d+-[0-9a-f]{{32}}", url)
            expired = await sign(
                server.url("live/cam"), secret, *streamer_options, "--expiry", str(int(time.time()) - 1)
            )
            other = await sign(server.url("live/other"), secret, *streamer_options, "--expires", "60")
            assert await publish_exit_code(viewer) != 0  # a viewer's URL never publishes (issue 18)
            assert await publish_exit_code(expired) != 0
            assert await publish_exit_code(server.url("live/cam") + "?" + other.partition("?")[2]) != 0
            assert await publish_exit_code(server.url("live/cam")) != 0
            async with publisher(streamer, seconds=15):
                await server.wait_log("publishing live/cam")
                # The burst's first refusal, then the others summed up with their reasons once it ends.
                log = server.log()
                assert "refused: publish of live/cam over rtmp: wrong signature" in log
                assert "x publish of live/cam over rtmp: signature expired" in log
                assert "x publish of live/cam over rtmp: no signature" in log
                assert len(await probe_streams(viewer)) == 2  # RTMP play with the viewer's URL
                flv = f"http://{HOST}:{server.http_port}/live/cam.flv"
                assert len(await probe_streams(await sign(flv, secret))) == 2
                assert len(await probe_streams(await sign(flv, secret, "--jwt", "--action", "play"))) == 2
                assert (await api(server.http_port, "GET", "/live/cam.flv")).status_code == 401  # type: ignore[arg-type]
                expired_flv = await sign(flv, secret, "--expiry", str(int(time.time()) - 1))
                async with httpx.AsyncClient() as client:
                    answer = await client.get(expired_flv)
                assert answer.status_code == 403 and "signature expired" in answer.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_match_live_state_with_real_clients() -> None:
    with trio.fail_after(90):
        async with cli_server("--metrics-per-stream") as server:
            async with publisher(server.url("live/cam"), seconds=30):
                await server.wait_log("publishing live/cam")
                async with player(f"http://{HOST}:{server.http_port}/live/cam.flv") as play:
                    await play.wait_frames(video=30, audio=30)
                    segments = ("arcly_hls_segment_duration_seconds_count", (("app", "live"), ("variant", "ll")))
                    while segments not in (
                        found := samples(
                            (
                                await api(
                                    server.http_port,
                                    "GET",  # type: ignore[arg-type]
                                    "/metrics",
                                )
                            ).text
                        )
                    ):
                        await trio.sleep(0.2)  # the first 2 s segment
                    sessions = (await api(server.http_port, "GET", "/api/sessions")).json()  # type: ignore[arg-type]
            assert found[("arcly_streams", (("app", "live"),))] == 1
            assert found[("arcly_publishers", (("protocol", "rtmp"),))] == 1
            assert found[("arcly_subscribers", (("protocol", "http-flv"),))] == 1
            assert (
                found[("arcly_stream_subscribers", (("app", "live"), ("protocol", "http-flv"), ("stream", "cam")))] == 1
            )
            player_session = next(s for s in sessions["sessions"] if s["role"] == "play")
            egress = found[("arcly_egress_bytes_total", (("protocol", "http-flv"),))]
            assert 0 < egress <= player_session["bytes"]  # scraped first: it can only have grown since
            assert found[("arcly_ingress_bytes_total", (("protocol", "rtmp"),))] > egress / 2
            assert found[segments] >= 1
            assert found[("arcly_connections", (("protocol", "rtmp"),))] >= 1


@asynccontextmanager
async def prometheus(target_port: int, tmp_path: Path) -> AsyncIterator[str]:
    """A real Prometheus scraping ``127.0.0.1:target_port/metrics`` twice a second; yields the
    base URL of its HTTP API (on a port it picked itself, read from its log)."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n"
        f"  - job_name: arcly\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
    )
    process = await trio.lowlevel.open_process(
        [
            require_tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            "--web.listen-address=127.0.0.1:0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        log, address = b"", None
        with trio.fail_after(20):
            while address is None:
                chunk = await process.stderr.receive_some(65536)
                assert chunk, log.decode(errors="replace")
                log += chunk
                found = re.search(rb'msg="Listening on" address=([\d.]+:\d+)', log)
                address = found.group(1).decode() if found else None
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                async for _ in process.stderr:  # type: ignore[union-attr]
                    pass

            nursery.start_soon(drain)
            yield f"http://{address}"
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def promql(base: str, query: str) -> list[Any]:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(10):
            answer = await client.get(f"{base}/api/v1/query", params={"query": query})
    assert answer.status_code == 200, answer.text
    result: list[Any] = answer.json()["data"]["result"]
    return result


async def test_a_real_prometheus_sums_subscribers_to_0_after_the_last_player_and_sees_no_created_series(
    tmp_path: Path,
) -> None:
    """Issue 19, item 7, with Prometheus itself scraping ``serve``'s ``/metrics``: while a player
    plays, ``sum(arcly_subscribers)`` is 1; once it has left, 0 (before: no series at all, so
    Prometheus answered an empty result); and no ``*_created`` series is stored."""
    from arcly_trio.clients import open_rtmp_player

    with trio.fail_after(90):
        async with cli_server("--demo") as server, prometheus(server.http_port, tmp_path) as base:  # type: ignore[arg-type]
            async with open_rtmp_player(server.url("live/demo")) as play:
                assert await play.next_batch()
                while [sample["value"][1] for sample in await promql(base, "sum(arcly_subscribers)")] != ["1"]:
                    await trio.sleep(0.2)
            while (await api(server.http_port, "GET", "/api/streams")).json()["apps"][0]["streams"][0][  # type: ignore[arg-type]
                "subscribers"
            ]["total"]:
                await trio.sleep(0.1)
            left = time.time()
            # Wait for a scrape that began after the player had left.
            while not [
                s for s in await promql(base, "timestamp(arcly_build_info)") if float(s["value"][1]) > left + 0.1
            ]:
                await trio.sleep(0.2)
            assert [sample["value"][1] for sample in await promql(base, "sum(arcly_subscribers)")] == ["0"]
            assert await promql(base, 'count({__name__=~".+_created"})') == []
            assert [sample["value"][1] for sample in await promql(base, 'arcly_plays_total{protocol="rtmp"}')] == ["1"]


async def test_reload_adds_an_application_while_a_stream_plays(tmp_path: Path) -> None:
    config = tmp_path / "arcly.toml"
    config.write_text('app = ["live"]\n[apps.live]\nlag-budget = 600\n')
    with trio.fail_after(90):
        async with cli_server("--config", str(config), "--demo") as server:
            async with player(server.url("live/demo")) as play:
                await play.wait_frames(video=20, audio=20)
                assert await publish_exit_code(server.url("studio/cam")) != 0
                config.write_text(
                    'app = ["live", "studio"]\n[apps.live]\nlag-budget = 600\n[apps.studio]\npublish-token = "s3"\n'
                )
                server.process.send_signal(signal.SIGHUP)
                await server.wait_log("configuration reloaded")
                assert "application studio added" in server.log()
                await play.keeps_decoding(30)  # the stream of the application that stays plays on
                assert await publish_exit_code(server.url("studio/cam")) != 0  # its own token
                async with publisher(server.url("studio/cam?token=s3"), seconds=10):
                    await server.wait_log("publishing studio/cam")
                    assert len(await probe_streams(server.url("studio/cam"))) == 2
                config.write_text("app = [\n")  # broken: kept running as it was
                server.process.send_signal(signal.SIGHUP)
                await server.wait_log("the running configuration is kept")
                await play.keeps_decoding(15)


async def test_ffmpeg_publishes_over_rtmps_and_plays_over_https(tmp_path: Path) -> None:
    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    with trio.fail_after(90):
        async with cli_server(
            "--rtmps-port",
            "0",
            "--https-port",
            "0",
            "--tls-cert",
            str(tmp_path / "cert.pem"),
            "--tls-key",
            str(tmp_path / "key.pem"),
        ) as server:
            await server.wait_log("RTMPS listening")
            rtmps = int(re.search(r"RTMPS listening on [\d.]+:(\d+)", server.log()).group(1))  # type: ignore[union-attr]
            https = int(re.search(r"HTTPS listening on [\d.]+:(\d+)", server.log()).group(1))  # type: ignore[union-attr]
            async with publisher(f"rtmps://{HOST}:{rtmps}/live/secure", seconds=15) as pub:
                await server.wait_log("publishing live/secure")
                streams = await probe_streams(f"https://{HOST}:{https}/live/secure.flv")
                assert {s["codec_name"] for s in streams} == {"h264", "aac"}
                assert pub.running, pub.stderr()
                context = ssl.create_default_context()
                authority.configure_trust(context)
                sessions = (await api(https, "GET", "/api/sessions", scheme="https", verify=context)).json()
            assert [s["protocol"] for s in sessions["sessions"] if s["role"] == "publish"] == ["rtmps"]
            assert "Traceback" not in server.log()


async def test_kicking_a_player_over_the_api_ends_it() -> None:
    with trio.fail_after(60):
        async with cli_server("--demo", "--api-token", "k3y") as server:
            async with player(f"http://{HOST}:{server.http_port}/live/demo.flv") as play:
                await play.wait_frames(video=10, audio=10)
                assert (await api(server.http_port, "GET", "/api/sessions")).status_code == 401  # type: ignore[arg-type]
                sessions = (await api(server.http_port, "GET", "/api/sessions", "k3y")).json()  # type: ignore[arg-type]
                viewer = next(s for s in sessions["sessions"] if s["role"] == "play")
                assert (viewer["protocol"], viewer["key"], viewer["address"]) == ("http-flv", "live/demo", "127.0.0.1")
                answer = await api(server.http_port, "DELETE", f"/api/sessions/{viewer['id']}", "k3y")  # type: ignore[arg-type]
                assert answer.status_code == 200
                with trio.fail_after(10):
                    await play.wait()  # the player is told the stream ended and exits
                left = (await api(server.http_port, "GET", "/api/sessions", "k3y")).json()  # type: ignore[arg-type]
                assert all(s["id"] != viewer["id"] for s in left["sessions"])
            await server.wait_log(f"session {viewer['id']} (play of live/demo over http-flv from 127.0.0.1) kicked")


async def test_a_wrong_type_in_the_configuration_stops_the_server_with_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "arcly.toml"
    config.write_text('rtmp-port = 1935\n\n[apps.live]\nlag-budget = "lots"\n')
    with trio.fail_after(20):
        result = await trio.run_process(
            serve_command("--config", str(config)), cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
        )
    assert result.returncode == 2
    assert f"{config}:4: apps.live.lag-budget: expected an integer, not 'lots'" in result.stderr.decode()


async def test_no_secret_of_any_option_shows_in_the_api_metrics_log_or_audit_log(tmp_path: Path) -> None:
    """Issue 18, finding 3: health checks were named after the hook URL's netloc (its
    ``user:password@`` included) on the open ``/api/health``. Every option that carries a secret
    gets a canary here; the server is driven through every path that shows an option's URL
    (health checks, a failing hook, a working hook, failing push and pull links, an unreachable
    Redis, a failed and a good reload) and no canary may show in any API answer, ``/metrics``,
    the log or the audit log."""
    canaries: dict[str, str] = {}

    def canary(name: str) -> str:
        canaries[name] = f"CANARY{name.upper()}{len(canaries)}x"
        return canaries[name]

    dead = dead_url().rsplit(":", 1)[1].split("/")[0]  # a port where nothing listens
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "arcly.toml"
    with hook_server() as hooks:
        settings = {
            "on-publish": f"http://u:{canary('pubhookpw')}@127.0.0.1:{dead}/hook?key={canary('pubhookkey')}",
            "on-play": f"http://{canary('playhookuser')}:{canary('playhookpw')}@127.0.0.1:{hooks.port}/allow"
            f"?key={canary('playhookkey')}&x=1",
            "on-event": f"http://e:{canary('eventpw')}@127.0.0.1:{dead}/ev?token={canary('eventtoken')}",
            "push": [f"rtmp://p:{canary('pushpw')}@127.0.0.1:{dead}/live/{{stream}}?key={canary('pushkey')}"],
            "pull": [f"rtmp://l:{canary('pullpw')}@127.0.0.1:{dead}/{{app}}/{{stream}}?token={canary('pulltoken')}"],
            "cluster": f"redis://:{canary('redispw')}@127.0.0.1:{dead}/0",
            "publish-token": canary("publishtoken"),
            "play-token": canary("playtoken"),
            "api-token": canary("apitoken"),
            "sign-secret": canary("signsecret"),
            "sign-actions": "publish",
            "hook-fail-open": True,
            "audit": str(audit),
        }

        def write(**changes: Any) -> None:
            lines = []
            for key, value in {**settings, **changes}.items():
                text = (
                    "true"
                    if value is True
                    else (f"[{', '.join(repr(v) for v in value)}]" if isinstance(value, list) else repr(value))
                )
                lines.append(f"{key} = {text}".replace("'", '"'))
            config.write_text("\n".join(lines) + "\n")

        write()
        seen: list[str] = []
        token = canaries["apitoken"]
        with trio.fail_after(90):
            async with cli_server("--config", str(config), "--demo", "--log-level", "debug") as server:
                port = server.http_port
                assert port is not None
                await server.wait_log("push of live/demo to")  # the demo's push target fails
                await server.wait_log("on_publish hook")  # the dead hook, fail-open
                assert (await api(port, "GET", f"/live/nothing.flv?token={canaries['playtoken']}")).status_code == 404
                await server.wait_log("pull of live/nothing from")  # the pull from nowhere failed
                assert hooks.documents(f"/allow?key={canaries['playhookkey']}&x=1")  # the live hook was asked
                await server.wait_log("on_event hook")
                for path in ("/api/health", "/api/streams", "/api/sessions", "/api/server", "/metrics"):
                    answer = await api(port, "GET", path, token)
                    assert answer.status_code in (200, 503), (path, answer.text)
                    seen.append(answer.text)
                # A reload that fails (a hook URL that is not http) and one that works.
                write(**{"on-play": f"ftp://r:{canary('reloadpw')}@127.0.0.1/x?key={canary('reloadkey')}"})
                server.process.send_signal(signal.SIGHUP)
                await server.wait_log("the running configuration is kept")
                write(**{"on-event": f"http://e:{canary('neweventpw')}@127.0.0.1:{dead}/e2?t={canary('neweventt')}"})
                server.process.send_signal(signal.SIGHUP)
                await server.wait_log("configuration reloaded")
                seen.append((await api(port, "GET", "/api/health", token)).text)
                assert await server.stop() == 0
        log = server.log()
        records = audit.read_text()
    for name, secret in canaries.items():
        assert secret not in log, (name, [line for line in log.splitlines() if secret in line][:3])
        assert secret not in records, name
        for text in seen:
            assert secret not in text, (name, text[:2000])
    assert "HTTP Request: POST" not in log  # httpx's own line names the whole hook URL
    # What shows instead: the hooks' hosts and ports, the push target redacted, the failures.
    health = json.loads(seen[0])
    assert {check["name"] for check in health["checks"]} >= {
        f"hook-reachable:on_publish 127.0.0.1:{dead}",
        f"hook-reachable:on_play 127.0.0.1:{hooks.port}",
    }
    assert health["cluster"]["directory"] == "unreachable" and health["cluster"]["last_error"]
    (demo,) = json.loads(seen[1])["apps"][0]["streams"]
    assert demo["push"][0]["url"] == f"rtmp://127.0.0.1:{dead}/live/demo?key=***" and demo["push"][0]["last_error"]
    assert '"event":"config-reload"' in records and '"ok":false' in records
