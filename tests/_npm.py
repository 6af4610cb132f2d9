"""The JavaScript players the browser tests load (hls.js, dash.js), from the npm registry.

:func:`npm_file` installs a pinned package with Debian's ``npm`` into a cache folder (once;
``ARCLY_NPM_CACHE``, default ``~/.cache/arcly-trio/npm``) and returns a file of it. The tests
serve these files to Debian's Chromium from the server under test, so the pages load nothing
from the internet and no browser is downloaded. A missing ``npm`` fails in CI and skips
elsewhere (:mod:`tests._tools`); an install that fails is a test failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests._tools import require_tool

#: The players, pinned: npm package -> version.
PACKAGES = {"hls.js": "1.7.4", "dashjs": "5.2.1"}
#: The browser builds the tests serve.
HLS_JS = ("hls.js", "dist/hls.min.js")
DASH_JS = ("dashjs", "dist/modern/umd/dash.all.min.js")


def cache_dir() -> Path:
    return Path(os.environ.get("ARCLY_NPM_CACHE") or Path.home() / ".cache" / "arcly-trio" / "npm")


def npm_file(package: str, path: str) -> Path:
    """``path`` inside the installed ``package`` (installed first if needed)."""
    cache = cache_dir()
    target = cache / "node_modules" / package / path
    stamp = cache / "node_modules" / package / "package.json"
    version = PACKAGES[package]
    if not target.exists() or f'"version": "{version}"' not in stamp.read_text(errors="replace"):
        npm = require_tool("npm")
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(cache),
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel",
                "error",
                f"{package}@{version}",
            ],
            check=True,
            timeout=600,
        )
    return target
