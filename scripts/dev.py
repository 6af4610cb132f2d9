#!/usr/bin/env python3
"""One-command set-up for arcly-trio on a fresh machine with Python 3.11+.

    python3 scripts/dev.py serve   # venv + install, then `arcly-trio serve --demo`
    python3 scripts/dev.py test    # venv + install + test tools (ffmpeg, chromium...), then the whole suite
    python3 scripts/dev.py run COMMAND [ARGS...]   # any command in the venv: arcly-trio sign ...

All three create ``.venv`` next to the project (once: it says so, it takes about a minute) and
install the project into it (editable, with the ``test`` extra for ``test``). ``run`` runs the
command with ``.venv/bin`` first on ``PATH`` (``arcly-trio``, ``python`` and ``pip`` are the
venv's), as ``source .venv/bin/activate`` would. ``test`` also installs the third-party tools the
interop tests drive (ffmpeg/ffprobe, chromium and chromium-driver, npm, nginx with
libnginx-mod-rtmp, redis-server, prometheus, VLC and GStreamer with the plugins that play DASH,
curl)
with apt-get when they are missing and
the script runs as root (or with sudo); otherwise it says what to install. Extra arguments go
to the command: ``dev.py serve --rtmp-port 1936``, ``dev.py test -k rtmp``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
# tool on PATH -> the Debian package that provides it (the browser tests drive Debian's
# Chromium through its chromedriver; a downloaded browser is never used; npm installs the
# players the browser tests serve to it, hls.js and dash.js, into a cache: tests/_npm.py).
TOOLS = {
    "ffmpeg": "ffmpeg",
    "ffprobe": "ffmpeg",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "npm": "npm",
    # the relay tests push to and pull from nginx-rtmp; the cluster tests run a redis-server
    "nginx": "nginx",
    "redis-server": "redis-server",
    # a real Prometheus scrapes /metrics (tests/ops/test_ops_interop.py)
    "prometheus": "prometheus",
    # the DASH interop tests play the MPD with VLC (cvlc) and GStreamer (dashdemux2)
    "cvlc": "vlc-bin",
    "gst-launch-1.0": "gstreamer1.0-tools",
    # curl --http2 (with nghttp2) fetches over HTTP/2 from the HTTPS port (tests/workers/test_http2_interop.py)
    "curl": "curl",
}
# files (not on PATH; glob patterns) -> the Debian package that provides them
FILES = {
    "/usr/lib/nginx/modules/ngx_rtmp_module.so": "libnginx-mod-rtmp",
    "/usr/lib/*/vlc/plugins/demux/libadaptive_plugin.so": "vlc-plugin-base",
    "/usr/lib/*/gstreamer-1.0/libgstadaptivedemux2.so": "gstreamer1.0-plugins-good",
    "/usr/lib/*/gstreamer-1.0/libgstvideoparsersbad.so": "gstreamer1.0-plugins-bad",
    "/usr/lib/*/gstreamer-1.0/libgstlibav.so": "gstreamer1.0-libav",
}


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def _installed(extra: str) -> bool:
    """Whether the project is installed in the venv with ``extra`` (the ``test`` extra has
    everything the base install has), since ``pyproject.toml`` last changed."""
    pyproject = ROOT / "pyproject.toml"
    stamps = [VENV / f".installed-{name}" for name in ((extra,) if extra else ("base", "test"))]
    return any(stamp.exists() and stamp.stat().st_mtime >= pyproject.stat().st_mtime for stamp in stamps)


def ensure_venv(extra: str) -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"arcly-trio needs Python 3.11 or newer, not {sys.version.split()[0]}")
    if _installed(extra):
        return
    what = f"arcly-trio and its {extra} extra" if extra else "arcly-trio"
    print(
        f"Installing {what} into {VENV} (the first time takes about a minute; nothing shows meanwhile)...", flush=True
    )
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[{extra}]" if extra else str(ROOT))
    (VENV / f".installed-{extra or 'base'}").touch()
    activate = BIN / "activate"
    shown = activate.relative_to(ROOT) if activate.is_relative_to(ROOT) else activate
    print(
        f"Installed. Its commands are in {BIN} (arcly-trio, python): `python3 scripts/dev.py run COMMAND`, "
        f"or `source {shown}` first.",
        flush=True,
    )


def run_in_venv(command: list[str]) -> int:
    """Run ``command`` with the venv's ``bin`` first on ``PATH`` (as if it were activated);
    its exit code. Never returns on POSIX: the command replaces this process."""
    if not command:
        print(
            "usage: python3 scripts/dev.py run COMMAND [ARGS...]  (e.g. arcly-trio sign URL --secret S)",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "VIRTUAL_ENV": str(VENV), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONHOME", None)
    program = shutil.which(command[0], path=env["PATH"])
    if program is None:
        print(f"dev.py run: no command {command[0]!r} in {BIN} or on PATH", file=sys.stderr)
        return 127
    os.execve(program, [program, *command[1:]], env)
    return 0  # pragma: no cover - execve does not return


def ensure_tools() -> None:
    missing = sorted(
        {pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None}
        | {pkg for pattern, pkg in FILES.items() if not glob.glob(pattern)}
    )
    if not missing:
        return
    apt = shutil.which("apt-get")
    prefix: list[str] = [] if os.geteuid() == 0 else (["sudo"] if shutil.which("sudo") else [])
    if apt is None or (os.geteuid() != 0 and not prefix):
        print(
            f"warning: install {' '.join(missing)} for the interop tests "
            "(they fail in CI without them and are skipped elsewhere)",
            file=sys.stderr,
        )
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*prefix, apt, "update", "-qq"], check=True, env=env)
    subprocess.run([*prefix, apt, "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"serve", "test", "run"}:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        ensure_venv("")
        return run_in_venv(rest)
    if command == "serve":
        ensure_venv("")
        os.execv(str(PYTHON), [str(PYTHON), "-m", "arcly_trio", "serve", "--demo", *rest])
    ensure_venv("test")
    ensure_tools()
    result = subprocess.run([str(PYTHON), "-m", "pytest", *rest], cwd=ROOT)
    if result.returncode == 5:
        print("no test ran", file=sys.stderr)
        return 1
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
