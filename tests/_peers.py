"""Real third-party servers the relay and cluster tests run: nginx-rtmp and redis-server.

Each is started by the test on a free loopback port with a configuration the test writes, and
stopped (and its files removed) when the test ends. A missing program fails in CI and skips
elsewhere (:func:`tests._tools.require_tool`); nginx also needs Debian's ``libnginx-mod-rtmp``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests._net import free_port
from tests._tools import require_tool

HOST = "127.0.0.1"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

NGINX_CONF = """\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen {host}:{port};
        chunk_size 4096;
        application live {{
            live on;
        }}
    }}
}}
"""


async def wait_port(port: int, process: trio.Process, what: str) -> None:
    """Wait until ``port`` accepts connections (``process`` must not exit meanwhile)."""
    with trio.fail_after(10):
        while True:
            if process.returncode is not None:
                raise AssertionError(f"{what} exited with {process.returncode}")
            try:
                stream = await trio.open_tcp_stream(HOST, port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def nginx_rtmp() -> AsyncIterator[int]:
    """nginx with the RTMP module, application ``live`` (``live on``); yields its port."""
    nginx = require_tool("nginx")
    if not RTMP_MODULE.exists():
        message = f"{RTMP_MODULE} is missing (apt-get install -y libnginx-mod-rtmp)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="arcly-nginx-") as root:
        port = free_port()
        conf = Path(root) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(module=RTMP_MODULE, root=root, host=HOST, port=port))
        process = await trio.lowlevel.open_process(
            [nginx, "-p", root, "-c", str(conf), "-e", f"{root}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_port(port, process, "nginx")
            yield port
        finally:
            process.kill()
            await process.wait()


@asynccontextmanager
async def redis_server(port: int = 0) -> AsyncIterator[tuple[int, trio.Process]]:
    """A throwaway redis-server (no persistence) on ``port`` (a free one by default); yields
    ``(port, process)``."""
    redis = require_tool("redis-server")
    with tempfile.TemporaryDirectory(prefix="arcly-redis-") as root:
        port = port or free_port()
        process = await trio.lowlevel.open_process(
            [redis, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", root],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_port(port, process, "redis-server")
            yield port, process
        finally:
            process.kill()
            await process.wait()
