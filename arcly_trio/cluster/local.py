"""The supervisor's directory, served to its workers over a Unix socket (``--workers N``).

The supervisor of ``arcly-trio serve --workers N`` keeps one
:class:`~.memory.MemoryDirectory` and serves it with :class:`DirectoryServer` on a Unix socket in
its private run directory (mode 0600); each worker talks to it through :class:`LocalDirectory`,
a :class:`~.directory.ClusterDirectory` like any other, so the workers of one machine share
streams exactly as the nodes of a Redis cluster do.

Wire format: one JSON object per line. A request ``{"id": N, "op": NAME, "args": {...}}`` gets
``{"id": N, "result": ...}`` or ``{"id": N, "error": TEXT}``; after ``listen`` the server also
sends ``{"announcement": {...}}`` lines. Lines are at most 64 KiB.

Leases follow the connection: when a worker's connection ends (it exited or crashed), the
nodes it registered and the leases they held are dropped at once and their streams announced
unpublished, so the other workers stop pulling them and a publisher can come back on any worker
without waiting for a TTL.

Error policy: the server answers a malformed or unknown request with an ``error`` line (a
connection that sends more than 64 KiB without a newline is closed); the client raises
:class:`~arcly_trio.core.errors.DirectoryUnavailable` while it has no connection (it reconnects
every ``retry`` seconds in its ``run`` task) or when an answer takes over ``timeout``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from arcly_trio.cluster.directory import Announcement, NodeInfo
from arcly_trio.cluster.memory import MemoryDirectory
from arcly_trio.core.errors import DirectoryUnavailable
from arcly_trio.core.excgroups import unwrap_single
from arcly_trio.transport import TRANSPORT_ERRORS

__all__ = ["DirectoryServer", "LocalDirectory"]

log = logging.getLogger("arcly_trio.cluster")

MAX_LINE = 64 * 1024


class _Lines:
    """Newline-delimited messages from a stream, each at most ``MAX_LINE`` bytes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> bytes | None:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > MAX_LINE:
                raise ValueError(f"a line over {MAX_LINE} bytes")
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class DirectoryServer:
    """Serves a :class:`MemoryDirectory` on a Unix socket (see the module docstring)."""

    def __init__(self, directory: MemoryDirectory, path: str) -> None:
        self.directory = directory
        self.path = path

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        await sock.bind(self.path)
        os.chmod(self.path, 0o600)
        sock.listen(64)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, [trio.SocketListener(sock)])
            task_status.started()

    async def _handle(self, stream: trio.SocketStream) -> None:
        owned: set[str] = set()
        lock = trio.StrictFIFOLock()

        async def send(message: dict[str, Any]) -> None:
            async with lock:
                await stream.send_all(_encode(message))

        try:
            with unwrap_single():
                async with trio.open_nursery() as nursery:
                    lines = _Lines(stream)
                    while (line := await lines.next()) is not None:
                        await self._answer(line, send, owned, nursery)
                    nursery.cancel_scope.cancel()
        except (ValueError, *TRANSPORT_ERRORS) as exc:
            log.info("directory connection closed: %s", exc)
        finally:
            for node_id in owned:
                released = self.directory.drop_node(node_id)
                for key in released:
                    with trio.CancelScope(shield=True):
                        await self.directory.announce(Announcement("unpublish", key, node_id))
                # A worker that goes with streams published (it crashed) is news; one that stops
                # with nothing is routine (the supervisor logs workers starting and stopping).
                log.log(
                    logging.INFO if released else logging.DEBUG,
                    "directory: node %s is gone%s",
                    node_id,
                    f"; its streams are released ({', '.join(released)})" if released else "",
                )

    async def _answer(self, line: bytes, send: Any, owned: set[str], nursery: trio.Nursery) -> None:
        directory = self.directory
        request_id = None
        try:
            request = json.loads(line)
            request_id = request["id"]
            op = request["op"]
            args = request.get("args") or {}
            result: Any = None
            if op == "register":
                node = NodeInfo.from_json(json.dumps(args["node"]))
                owned.add(node.id)
                await directory.register(node, float(args["ttl"]))
            elif op == "unregister":
                owned.discard(str(args["node_id"]))
                await directory.unregister(str(args["node_id"]))
            elif op == "nodes":
                result = [node.document() for node in await directory.nodes()]
            elif op == "claim":
                result = await directory.claim(str(args["key"]), str(args["node_id"]), float(args["ttl"]))
            elif op == "refresh":
                result = await directory.refresh(
                    [str(k) for k in args["keys"]], str(args["node_id"]), float(args["ttl"])
                )
            elif op == "release":
                await directory.release(str(args["key"]), str(args["node_id"]))
            elif op == "owner":
                found = await directory.owner(str(args["key"]))
                result = None if found is None else found.document()
            elif op == "announce":
                await directory.announce(Announcement(str(args["event"]), str(args["key"]), str(args["node"])))
            elif op == "listen":
                await nursery.start(self._forward, send)
            else:
                raise ValueError(f"unknown op {op!r}")
        except (KeyError, TypeError, ValueError) as exc:
            await send({"id": request_id, "error": f"bad request: {exc}"})
            return
        await send({"id": request_id, "result": result})

    async def _forward(self, send: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.directory.listen() as announcements:
            task_status.started()
            async for announcement in announcements:
                await send({"announcement": json.loads(announcement.to_json())})


class LocalDirectory:
    """A worker's view of the supervisor's directory (see the module docstring)."""

    def __init__(self, path: str, *, timeout: float = 5.0, retry: float = 0.5) -> None:
        self.path = path
        self.timeout = timeout
        self.retry = retry
        self._stream: trio.abc.Stream | None = None
        self._lock = trio.StrictFIFOLock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._listeners: set[trio.MemorySendChannel[Announcement]] = set()
        self.connected = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection to the supervisor (reconnecting), and read its answers."""
        started = False
        while True:
            try:
                stream = await trio.open_unix_socket(self.path)
            except OSError as exc:
                if not started:
                    raise DirectoryUnavailable(f"cannot reach the supervisor at {self.path}: {exc}") from None
                await trio.sleep(self.retry)
                continue
            self._stream = stream
            self.connected.set()
            if not started:
                started = True
                task_status.started()
            try:
                if self._listeners:
                    await self._send({"id": 0, "op": "listen"})
                await self._read(stream)
            except (ValueError, *TRANSPORT_ERRORS) as exc:
                log.warning("lost the supervisor's directory: %s", exc)
            finally:
                self._stream = None
                self.connected = trio.Event()
                for event, slot in self._waiting.values():
                    slot.append(DirectoryUnavailable("the connection to the supervisor broke"))
                    event.set()
                self._waiting.clear()
                await trio.aclose_forcefully(stream)
            await trio.sleep(self.retry)

    async def _read(self, stream: trio.abc.Stream) -> None:
        lines = _Lines(stream)
        while (line := await lines.next()) is not None:
            message = json.loads(line)
            if "announcement" in message:
                announcement = Announcement.from_json(json.dumps(message["announcement"]))
                for send in list(self._listeners):
                    try:
                        send.send_nowait(announcement)
                    except (trio.WouldBlock, trio.BrokenResourceError):
                        pass
                continue
            waiter = self._waiting.pop(message.get("id"), None)
            if waiter is not None:
                event, slot = waiter
                slot.append(message)
                event.set()

    async def _send(self, message: dict[str, Any]) -> None:
        stream = self._stream
        if stream is None:
            raise DirectoryUnavailable("not connected to the supervisor")
        try:
            async with self._lock:
                await stream.send_all(_encode(message))
        except TRANSPORT_ERRORS as exc:
            raise DirectoryUnavailable(f"the connection to the supervisor broke: {exc}") from None

    async def _call(self, op: str, **args: Any) -> Any:
        request_id = next(self._ids)
        event, slot = trio.Event(), []  # type: ignore[var-annotated]
        self._waiting[request_id] = (event, slot)
        try:
            await self._send({"id": request_id, "op": op, "args": args})
            with trio.move_on_after(self.timeout):
                await event.wait()
        finally:
            self._waiting.pop(request_id, None)
        if not slot:
            raise DirectoryUnavailable(f"the supervisor did not answer {op} within {self.timeout:g} s")
        answer = slot[0]
        if isinstance(answer, DirectoryUnavailable):
            raise answer
        if "error" in answer:
            raise DirectoryUnavailable(f"the supervisor refused {op}: {answer['error']}")
        return answer.get("result")

    async def register(self, node: NodeInfo, ttl: float) -> None:
        await self._call("register", node=node.document(), ttl=ttl)

    async def unregister(self, node_id: str) -> None:
        await self._call("unregister", node_id=node_id)

    async def nodes(self) -> list[NodeInfo]:
        return [NodeInfo.from_json(json.dumps(node)) for node in await self._call("nodes")]

    async def claim(self, key: str, node_id: str, ttl: float) -> str:
        return str(await self._call("claim", key=key, node_id=node_id, ttl=ttl))

    async def refresh(self, keys: Sequence[str], node_id: str, ttl: float) -> list[str]:
        return list(await self._call("refresh", keys=list(keys), node_id=node_id, ttl=ttl))

    async def release(self, key: str, node_id: str) -> None:
        await self._call("release", key=key, node_id=node_id)

    async def owner(self, key: str) -> NodeInfo | None:
        found = await self._call("owner", key=key)
        return None if found is None else NodeInfo.from_json(json.dumps(found))

    async def announce(self, announcement: Announcement) -> None:
        await self._call("announce", event=announcement.event, key=announcement.key, node=announcement.node)

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[Announcement]]:
        send, receive = trio.open_memory_channel[Announcement](256)
        first = not self._listeners
        self._listeners.add(send)
        try:
            if first:
                await self._call("listen")
            async with receive:
                yield receive
        finally:
            self._listeners.discard(send)
            send.close()
