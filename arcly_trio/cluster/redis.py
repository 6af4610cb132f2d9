"""The cluster directory on Redis, with ``coredis`` (anyio-based, so it runs on trio).

Keys (``prefix`` defaults to ``arcly:``):

* ``{prefix}node:{id}``: the node's :class:`~.directory.NodeInfo` as JSON, ``SET ... EX ttl``
  (the heartbeat sets it again);
* ``{prefix}stream:{app}/{name}``: the id of the node that owns the stream, taken with
  ``SET ... NX EX ttl``; refreshed and released by small Lua scripts that act only if the lease is
  still ours (or free, for a refresh after an outage);
* channel ``{prefix}events``: :class:`~.directory.Announcement` JSON (``PUBLISH``).

Redis is only the directory: media never goes through it. Use a Redis with a replica (and
Sentinel, or a managed Redis) in production; see ``docs/cluster.md``.

Error policy: every Redis or connection failure (refused, reset, timed out after ``timeout``)
raises :class:`~arcly_trio.core.errors.DirectoryUnavailable` (its message, like every log line
here, has the URL's password scrubbed: it reaches ``/api/health`` and the log); a node record that does not parse
is treated as absent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import coredis
import coredis.exceptions
import trio

from arcly_trio.cluster.directory import Announcement, NodeInfo
from arcly_trio.core.errors import DirectoryUnavailable
from arcly_trio.core.excgroups import leaves
from arcly_trio.core.redact import redact_url, scrub

__all__ = ["RedisDirectory"]

log = logging.getLogger("arcly_trio.cluster")

_REFRESH = """
local lost = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == false or holder == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
  else
    table.insert(lost, key)
  end
end
return lost
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_FAILURES = (coredis.exceptions.RedisError, OSError, TimeoutError, trio.TooSlowError)


class RedisDirectory:
    """A :class:`~.directory.ClusterDirectory` on Redis (see the module docstring).

    ``url`` is ``redis://HOST:PORT/DB`` (``rediss://`` for TLS, ``redis://:PASSWORD@HOST...``);
    ``timeout`` bounds every call.
    """

    def __init__(self, url: str, *, prefix: str = "arcly:", timeout: float = 2.0) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"--cluster takes a redis:// URL, not {redact_url(url)!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._client: Any = self._new_client()
        self._refresh: Any = None
        self._release: Any = None
        self._entered = False

    def _new_client(self) -> Any:
        return coredis.Redis.from_url(
            self.url, decode_responses=True, connect_timeout=self.timeout, stream_timeout=self.timeout
        )

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def _stream_key(self, key: str) -> str:
        return f"{self.prefix}stream:{key}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the client's connection pool open (coredis needs its context); when Redis goes
        away under it (its subscription task fails), open a new client a second later."""
        started = False
        while True:
            try:
                async with self._client:
                    self._refresh = self._client.register_script(_REFRESH)
                    self._release = self._client.register_script(_RELEASE)
                    self._entered = True
                    if not started:
                        started = True
                        task_status.started()
                    await trio.sleep_forever()
            except BaseExceptionGroup as group:
                if any(not isinstance(leaf, _FAILURES) for leaf in leaves(group)):
                    raise
                log.debug("redis client restarted: %s", scrub(str(leaves(group)[0]), self.url))
            except _FAILURES as exc:
                log.debug("redis client restarted: %s", scrub(str(exc), self.url))
            finally:
                self._entered = False
            if not started:
                started = True
                task_status.started()
            await trio.sleep(1.0)
            self._client = self._new_client()

    async def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._entered:
            raise DirectoryUnavailable("the Redis directory is not running")
        with _mapped(what, self.url), trio.fail_after(self.timeout):
            return await function(*args, **kwargs)

    async def register(self, node: NodeInfo, ttl: float) -> None:
        await self._call("SET", self._client.set, self._node_key(node.id), node.to_json(), ex=max(1, round(ttl)))

    async def unregister(self, node_id: str) -> None:
        await self._call("DEL", self._client.delete, [self._node_key(node_id)])

    async def nodes(self) -> list[NodeInfo]:
        keys: list[str] = []

        async def scan() -> None:
            async for key in self._client.scan_iter(match=self._node_key("*")):
                keys.append(key)

        await self._call("SCAN", scan)
        if not keys:
            return []
        values = await self._call("MGET", self._client.mget, keys)
        return [node for value in values if value and (node := _parse_node(value)) is not None]

    async def claim(self, key: str, node_id: str, ttl: float) -> str:
        name = self._stream_key(key)
        for _ in range(3):
            taken = await self._call(
                "SET NX", self._client.set, name, node_id, condition=coredis.PureToken.NX, ex=max(1, round(ttl))
            )
            if taken:
                return node_id
            holder = await self._call("GET", self._client.get, name)
            if holder is not None:
                return str(holder)
        return node_id  # pragma: no cover - the lease kept expiring between SET and GET

    async def refresh(self, keys: Sequence[str], node_id: str, ttl: float) -> list[str]:
        if not keys:
            return []
        names = [self._stream_key(key) for key in keys]
        lost = await self._call("EVALSHA refresh", self._refresh, keys=names, args=[node_id, max(1, round(ttl))])
        prefix = len(self._stream_key(""))
        return [str(name)[prefix:] for name in lost or []]

    async def release(self, key: str, node_id: str) -> None:
        await self._call("EVALSHA release", self._release, keys=[self._stream_key(key)], args=[node_id])

    async def owner(self, key: str) -> NodeInfo | None:
        holder = await self._call("GET", self._client.get, self._stream_key(key))
        if holder is None:
            return None
        value = await self._call("GET", self._client.get, self._node_key(str(holder)))
        return None if value is None else _parse_node(value)

    async def announce(self, announcement: Announcement) -> None:
        await self._call("PUBLISH", self._client.publish, f"{self.prefix}events", announcement.to_json())

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[Announcement]]:
        if not self._entered:
            raise DirectoryUnavailable("the Redis directory is not running")
        channel = f"{self.prefix}events"
        with _mapped("SUBSCRIBE", self.url):
            async with self._client.pubsub(
                channels=[channel], ignore_subscribe_messages=True, retry_policy=None
            ) as pubsub:
                yield _announcements(pubsub, self.url)


@contextmanager
def _mapped(what: str, url: str) -> Iterator[None]:
    """Redis and connection failures (alone, or in the exception group of coredis's task
    group) as ``DirectoryUnavailable``, whose message never holds the URL's password."""
    try:
        yield
    except _FAILURES as exc:
        raise DirectoryUnavailable(f"redis {what}: {scrub(str(exc), url) or type(exc).__name__}") from None
    except BaseExceptionGroup as group:
        found = leaves(group)
        if found and all(isinstance(leaf, (*_FAILURES, DirectoryUnavailable)) for leaf in found):
            detail = scrub(str(found[0]), url) or type(found[0]).__name__
            raise DirectoryUnavailable(f"redis {what}: {detail}") from None
        raise


async def _announcements(pubsub: Any, url: str) -> AsyncIterator[Announcement]:
    with _mapped("subscription", url):
        async for message in pubsub:
            if message.get("type") != "message":
                continue
            try:
                yield Announcement.from_json(message["data"])
            except (ValueError, KeyError, TypeError):
                log.debug("ignored a malformed announcement")


def _parse_node(value: str) -> NodeInfo | None:
    try:
        return NodeInfo.from_json(value)
    except (ValueError, KeyError, TypeError):
        return None
