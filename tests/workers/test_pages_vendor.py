"""The vendored hls.js of the pages (``arcly_trio/workers/http/pages/vendor/``, issue 23's DVR
scrub bar): shipped, served, pinned, and loaded only when the watch page plays HLS.

* From an installed layout: the package is laid out in a temporary folder the way setuptools
  installs it (the modules of every package, plus the files ``[tool.setuptools.package-data]``
  of ``pyproject.toml`` selects, with setuptools' glob rules), and a server started from that
  folder alone, in a subprocess, answers ``/pages/vendor/hls-1.7.4.min.js`` with ``200``,
  ``text/javascript``, a year-long immutable cache and the bytes whose sha256 the vendor
  folder's README records. (Building a real wheel needs setuptools >= 77 from the network.)
* The README's version is the one the browser tests pin (``tests/_npm.py``), the license is
  next to the file, the watch script names the same file the routes serve, and no page loads
  it up front (the watch script adds it when it plays HLS).
* Only the listed library is served: the README, the license, other names and traversals are
  ``404``. A client that takes gzip gets the packaged ``.gz`` (``Content-Encoding: gzip``, the
  same bytes once decompressed); ``q=0`` or no ``Accept-Encoding`` gets the plain file.

The pages' strict Content-Security-Policy is unchanged (``script-src`` falls back to
``default-src 'self'``): :mod:`tests.workers.test_dvr_watch_interop` plays with it in Chromium.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import trio

from arcly_trio import Engine
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.http.pages_routes import HLS_JS, PAGE_FILES, VENDOR_FILES, accepts_gzip
from tests._npm import PACKAGES

ROOT = Path(__file__).resolve().parent.parent.parent
PAGES = ROOT / "arcly_trio" / "workers" / "http" / "pages"
VENDOR = PAGES / "vendor"


def recorded_sha256() -> str:
    table = (VENDOR / "README.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith(f"| `{HLS_JS}` |"))
    found = re.findall(r"`([0-9a-f]{64})`", row)
    assert len(found) == 1, row
    return found[0]


def installed_layout(target: Path) -> Path:
    """``arcly_trio`` as setuptools installs it, under ``target``: every package's modules (a
    package is a folder with ``__init__.py``) and the package data that ``pyproject.toml``
    selects (``build_py.find_data_files``: each pattern globbed from the package's folder,
    files only)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["arcly_trio"]
    source = ROOT / "arcly_trio"
    files = [path for path in source.rglob("*.py") if (path.parent / "__init__.py").exists()]
    for pattern in patterns:
        files += [Path(name) for name in glob.glob(str(source / pattern), recursive=True) if os.path.isfile(name)]
    for path in files:
        copy = target / "arcly_trio" / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return target


SERVE = """
import hashlib, json, sys, trio
import arcly_trio
from arcly_trio import Engine
from arcly_trio.clients.http import http_request
from arcly_trio.workers.http import HttpServer

async def main():
    http = HttpServer("127.0.0.1", 0)
    async with Engine.builder().protocol(http).build():
        with trio.fail_after(10):
            reply = await http_request(f"http://127.0.0.1:{http.port}/pages/vendor/" + sys.argv[1], limit=1 << 24)
    print(json.dumps({"module": arcly_trio.__file__, "status": reply.status, "headers": dict(reply.headers),
                      "sha256": hashlib.sha256(reply.body).hexdigest(), "size": len(reply.body)}))

trio.run(main)
"""


def test_an_installed_package_serves_the_vendored_hlsjs(tmp_path: Path) -> None:
    site = installed_layout(tmp_path)
    assert (site / "arcly_trio" / "workers" / "http" / "pages" / "vendor" / "hls.js.LICENSE").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", SERVE, HLS_JS], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reply = json.loads(done.stdout)
    assert reply["module"].startswith(str(site)), reply["module"]  # not the source tree's package
    assert reply["status"] == 200, reply
    assert reply["headers"]["content-type"] == "text/javascript; charset=utf-8"
    assert reply["headers"]["cache-control"] == "public, max-age=31536000, immutable"
    assert reply["headers"]["x-content-type-options"] == "nosniff"
    assert reply["sha256"] == recorded_sha256() and reply["size"] > 500_000, reply


def test_the_vendored_file_is_the_pinned_version_with_its_license() -> None:
    readme = (VENDOR / "README.md").read_text()
    version = PACKAGES["hls.js"]
    assert HLS_JS == f"hls-{version}.min.js" and VENDOR_FILES == (HLS_JS,)
    assert f"| `{HLS_JS}` | npm `hls.js`, `dist/hls.min.js` | {version} | Apache-2.0" in readme
    assert hashlib.sha256((VENDOR / HLS_JS).read_bytes()).hexdigest() == recorded_sha256()
    assert gzip.decompress((VENDOR / f"{HLS_JS}.gz").read_bytes()) == (VENDOR / HLS_JS).read_bytes()
    assert "Apache License, Version 2.0" in (VENDOR / "hls.js.LICENSE").read_text()
    # The file itself says which version it is (hls.js sets Hls.version from its package.json).
    assert f'"{version}"' in (VENDOR / HLS_JS).read_text()


def test_only_the_watch_script_loads_it_and_only_by_name() -> None:
    watch = (PAGES / "watch.js").read_text()
    assert f'const HLS_JS = "/pages/vendor/{HLS_JS}";' in watch
    for name in PAGE_FILES:
        text = (PAGES / name).read_text()
        assert ("/pages/vendor/" in text) == (name == "watch.js"), name  # no page loads it up front


async def test_only_the_listed_library_is_served(http_get) -> None:  # type: ignore[no-untyped-def]
    http = HttpServer("127.0.0.1", 0)
    with trio.fail_after(20):
        async with Engine.builder().protocol(http).build():
            status, headers, body = await http_get(http.port, f"/pages/vendor/{HLS_JS}")
            assert status == 200 and hashlib.sha256(body).hexdigest() == recorded_sha256()
            for name in ("README.md", "hls.js.LICENSE", "hls.min.js", "..%2Fwatch.js", "%2e%2e", "x" * 4000):
                status, _, body = await http_get(http.port, f"/pages/vendor/{name}")
                assert status in (400, 404, 414, 431), (name, status)
                assert b"Apache" not in body and b"sha256" not in body
            status, _, _ = await http_get(http.port, "/pages/vendor")
            assert status == 404


@pytest.mark.parametrize(
    ("value", "gzipped"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br, zstd", True),  # Chromium's
        ("br;q=1.0, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=nonsense", True),
        ("gzipped", False),
        ("," * 10_000 + "gzip", False),  # only the first 64 items are read
    ],
)
def test_accept_encoding(value: str | None, gzipped: bool) -> None:
    assert accepts_gzip(value) is gzipped


async def test_gzip_for_whoever_takes_it(http_get) -> None:  # type: ignore[no-untyped-def]
    http = HttpServer("127.0.0.1", 0)
    with trio.fail_after(20):
        async with Engine.builder().protocol(http).build():
            path = f"/pages/vendor/{HLS_JS}"
            status, headers, body = await http_get(http.port, path, [("accept-encoding", "gzip, deflate, br")])
            assert status == 200 and headers["content-encoding"] == "gzip" and len(body) < 200_000
            assert hashlib.sha256(gzip.decompress(body)).hexdigest() == recorded_sha256()
            assert headers["vary"] == "accept-encoding" and headers["content-type"].startswith("text/javascript")
            status, headers, body = await http_get(http.port, path, [("accept-encoding", "gzip;q=0, br")])
            assert status == 200 and "content-encoding" not in headers
            assert hashlib.sha256(body).hexdigest() == recorded_sha256()
