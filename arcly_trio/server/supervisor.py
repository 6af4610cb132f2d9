"""``arcly-trio serve --workers N``: one supervisor process and N worker processes.

The supervisor:

* makes a private run directory (mode 0700) and reserves the TCP ports (port 0 is resolved
  here, so every worker gets the same one): it binds them with ``SO_REUSEPORT`` without
  listening, which keeps them for the workers' ``SO_REUSEPORT`` listeners: RTMP, HTTP, and
  RTMPS, HTTPS, RTSP and RTSPS when they are on. The UDP listeners differ: WebRTC
  (``--webrtc-port``) and SRT (``--srt-port``) listen on port + worker index (a UDP peer must
  reach the process that holds its session); the RTSP workers share ``--rtsp-udp-ports`` (each
  binds the pairs it finds free); ``--ingest-udp`` is received by the first worker only (one
  receiver per port);
* serves the workers' directory (:class:`~arcly_trio.cluster.DirectoryServer`) on a Unix socket
  there, unless ``--cluster`` gives a Redis one;
* starts the N workers (``python -m arcly_trio serve`` with the same options, plus the hidden
  ``--worker-dir``/``--worker-index``/``--worker-count``), each with its own engine and trio loop
  on the same ports; a worker whose supervisor is gone (killed) shuts itself down (it watches
  its parent process);
* logs "ready", with the URLs to use (:func:`~.logs.ready_lines`), once every worker listens:
  each says so on its standard output (:func:`tell_supervisor_ready`; anything else a worker
  writes there is passed on), and each worker's "ready" (a restarted one's too) is a line;
* restarts a worker that exits unexpectedly (logged, with a backoff of 1 s doubling up to 30 s,
  reset after a minute of running), while the others keep serving;
* forwards SIGTERM/SIGINT (graceful shutdown: it waits ``--shutdown-grace`` plus 5 s, then kills
  what is left) and SIGHUP (each worker reloads ``--config``) to the workers.

Every worker answers ``/api/streams``, ``/api/health``, ``/api/sessions`` (and kicks a session
of any worker) and ``/metrics`` for all of them (see :mod:`.worker_api`).

Error policy: a port that cannot be reserved or a run directory that cannot be made ends the
supervisor with a message (exit code 1); a worker's failure is logged and the worker restarted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import trio

from arcly_trio.cluster import DirectoryServer, MemoryDirectory
from arcly_trio.core.errors import CannotListen
from arcly_trio.server.logs import ready_lines
from arcly_trio.server.options import describe_listen_error
from arcly_trio.transport import TRANSPORT_ERRORS

__all__ = ["supervise", "worker_count", "worker_argv", "tell_supervisor_ready", "READY"]

log = logging.getLogger("arcly_trio.supervisor")

#: What a worker writes on its standard output once it listens.
READY = b"arcly-trio worker ready"


def tell_supervisor_ready() -> None:
    """Tell the supervisor this worker listens (a line on the worker's standard output)."""
    sys.stdout.buffer.write(READY + b"\n")
    sys.stdout.buffer.flush()


def worker_count(value: str) -> int:
    """``--workers`` as a number: ``auto`` is the CPU count."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = int(value)
    if count < 1:
        raise ValueError("--workers must be at least 1")
    return count


def worker_argv(
    argv: Sequence[str],
    *,
    rtmp_port: int,
    http_port: int,
    run_dir: str,
    index: int,
    count: int,
    rtmps_port: int = -1,
    https_port: int = -1,
    rtsp_port: int = -1,
    rtsps_port: int = -1,
) -> list[str]:
    """The command line of worker ``index``: the supervisor's options without ``--workers``,
    with the resolved ports and the worker options (later options win in argparse). The TCP
    ports the supervisor holds (RTMP, HTTP, and RTMPS, HTTPS, RTSP, RTSPS when on: ``-1`` is off)
    are given resolved, so ``0`` means one port every worker shares, not one each."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    tls = [
        *(["--rtmps-port", str(rtmps_port)] if rtmps_port >= 0 else []),
        *(["--https-port", str(https_port)] if https_port >= 0 else []),
        *(["--rtsp-port", str(rtsp_port)] if rtsp_port >= 0 else []),
        *(["--rtsps-port", str(rtsps_port)] if rtsps_port >= 0 else []),
    ]
    return [
        sys.executable,
        "-m",
        "arcly_trio",
        *out,
        "--rtmp-port",
        str(rtmp_port),
        "--http-port",
        str(http_port),
        *tls,
        "--worker-dir",
        run_dir,
        "--worker-index",
        str(index),
        "--worker-count",
        str(count),
    ]


def _reserve(host: str, port: int, protocol: str) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT and not listening (keeps the port);
    :class:`~arcly_trio.core.errors.CannotListen` if it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotListen(protocol, host, port, exc.errno, exc.strerror or str(exc)) from None
    return sock


class Supervisor:
    """The running supervisor (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, argv: Sequence[str], count: int) -> None:
        self.args = args
        self.argv = list(argv)
        self.count = count
        self.run_dir = ""
        self.rtmp_port = 0
        self.http_port = -1
        self.rtmps_port = -1
        self.https_port = -1
        self.rtsp_port = -1
        self.rtsps_port = -1
        self.processes: dict[int, trio.Process] = {}
        self.restarts = 0
        self.stopping = False
        self.ready: set[int] = set()
        """The workers that listen now."""
        self.announced = False

    async def run(self) -> None:
        args = self.args
        self.run_dir = tempfile.mkdtemp(prefix="arcly-trio-")
        reserved: list[socket.socket] = []
        try:
            rtmp = _reserve(args.host, args.rtmp_port, "rtmp")
            reserved.append(rtmp)
            self.rtmp_port = rtmp.getsockname()[1]
            if args.http_port >= 0:
                http = _reserve(args.host, args.http_port, "http")
                reserved.append(http)
                self.http_port = http.getsockname()[1]
            for name in ("rtmps_port", "https_port", "rtsp_port", "rtsps_port"):  # when asked for
                if getattr(args, name) >= 0:
                    sock = _reserve(args.host, getattr(args, name), name.partition("_")[0])
                    reserved.append(sock)
                    setattr(self, name, sock.getsockname()[1])
            log.info("RTMP port %s:%d held for %d workers (SO_REUSEPORT)", args.host, self.rtmp_port, self.count)
            if self.http_port >= 0:
                log.info("HTTP port %s:%d held for %d workers (SO_REUSEPORT)", args.host, self.http_port, self.count)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    if not args.cluster:
                        server = DirectoryServer(MemoryDirectory(), os.path.join(self.run_dir, "directory.sock"))
                        await nursery.start(server.serve)
                    for index in range(self.count):
                        nursery.start_soon(self._keep, index)
                    log.info("starting %d workers (run directory %s)", self.count, self.run_dir)
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            log.info("SIGHUP: forwarded to the workers")
                            self._signal_all(signal.SIGHUP)
                            continue
                        log.info(
                            "%s received: stopping the workers (grace %g s)",
                            signal.Signals(signum).name,
                            args.shutdown_grace,
                        )
                        break
                    self.stopping = True
                    self._signal_all(signal.SIGTERM)
                    with trio.move_on_after(args.shutdown_grace + 5):
                        while any(process.returncode is None for process in self.processes.values()):
                            await trio.sleep(0.05)
                    for process in self.processes.values():
                        if process.returncode is None:
                            log.warning("worker pid %d did not stop in time: killed", process.pid)
                            process.kill()
                    nursery.cancel_scope.cancel()
        finally:
            for sock in reserved:
                sock.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("arcly-trio stopped")

    async def _read_worker(self, index: int, process: trio.Process, done: trio.Event) -> None:
        """Read worker ``index``'s standard output: its "ready", and anything else (passed on)."""
        assert process.stdout is not None
        pending = b""
        try:
            async for chunk in process.stdout:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line == READY:
                        self._worker_ready(index, process.pid)
                    else:
                        _pass_on(line + b"\n")
                if len(pending) > 65536:
                    _pass_on(pending)
                    pending = b""
        except TRANSPORT_ERRORS:
            pass
        finally:
            if pending:
                _pass_on(pending)
            done.set()

    def _worker_ready(self, index: int, pid: int) -> None:
        self.ready.add(index)
        log.info("worker %d ready (pid %d)", index, pid)
        if self.announced or len(self.ready) < self.count:
            return
        self.announced = True
        args = self.args
        from arcly_trio.server.build import app_specs  # noqa: PLC0415 - the runtime's modules, for the names only

        for line in ready_lines(
            host=args.host,
            public_host=args.public_host,
            rtmp_port=self.rtmp_port,
            rtmps_port=self.rtmps_port if self.rtmps_port >= 0 else None,
            http=[
                (scheme, port) for scheme, port in (("http", self.http_port), ("https", self.https_port)) if port >= 0
            ],
            apps=list(app_specs(args)),
            hls_variant=args.hls_variant if args.hls else None,
            hls_muxed=args.hls_muxed,
            demo=args.demo,
            srt_port=args.srt_port if args.srt_port > 0 else None,
            srt_workers=self.count,
            rtsp_port=self.rtsp_port if self.rtsp_port >= 0 else None,
            rtsps_port=self.rtsps_port if self.rtsps_port >= 0 else None,
        ):
            log.info("%s", f"{line} ({self.count} workers)" if line.startswith("arcly-trio ready") else line)

    def _signal_all(self, signum: int) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signum)

    async def _keep(self, index: int) -> None:
        """Run worker ``index``; restart it when it exits while the server is not stopping."""
        delay = 1.0
        while True:
            argv = worker_argv(
                self.argv,
                rtmp_port=self.rtmp_port,
                http_port=self.http_port,
                run_dir=self.run_dir,
                index=index,
                count=self.count,
                rtmps_port=self.rtmps_port,
                https_port=self.https_port,
                rtsp_port=self.rtsp_port,
                rtsps_port=self.rtsps_port,
            )
            started = trio.current_time()
            process = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            self.processes[index] = process
            log.info("worker %d started (pid %d)", index, process.pid)
            try:
                async with trio.open_nursery() as nursery:
                    read = trio.Event()
                    nursery.start_soon(self._read_worker, index, process, read)
                    code = await process.wait()
                    self.ready.discard(index)
                    with trio.move_on_after(1):  # what it wrote last (a child could hold the pipe open)
                        await read.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self.ready.discard(index)
                if process.returncode is None:
                    with trio.CancelScope(shield=True):
                        process.kill()
                        await process.wait()
            if self.stopping:
                log.info("worker %d stopped (exit code %d)", index, code)
                return
            if trio.current_time() - started > 60:
                delay = 1.0
            self.restarts += 1
            log.error("worker %d (pid %d) exited with code %d; restarting it in %g s", index, process.pid, code, delay)
            await trio.sleep(delay)
            delay = min(30.0, delay * 2)


def _pass_on(data: bytes) -> None:
    """What a worker wrote on its standard output, on the supervisor's."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def supervise(args: argparse.Namespace, argv: Sequence[str], count: int) -> int:
    """Run the supervisor until SIGINT/SIGTERM; the process exit code."""
    try:
        trio.run(Supervisor(args, argv, count).run)
    except OSError as exc:
        log.error("cannot start: %s", describe_listen_error(exc))
        return 1
    return 0
