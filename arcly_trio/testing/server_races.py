"""Races over real connections: the race machine drives your whole server, not only its engine.

:class:`ServerRaces` is :class:`~.races.EngineRaces` plus actors that talk to the engine's protocol
workers over loopback sockets, the way OBS, ffmpeg and players do:

* RTMP publishers (handshake, ``connect``, ``createStream``, ``publish``, then the frames as RTMP
  messages) that may drop their socket mid-handshake, before publishing, or in the middle of a
  message (mid-GOP);
* RTMP players and HTTP-FLV players that may drop their socket at any time, some with
  ``RaceSetup.refused_play``'s token (they must be refused and get no frame).

They interleave with the in-process actors (the same overlapping steps), and the invariants are
the machine's, plus, for each protocol player, order and decodability of what it received (the
frames are matched by their FLV bodies), and at the end no connection left open in any worker.
Use it like :func:`~.races.run_races`, with ``machine=ServerRaces`` and an engine that has an
:class:`~arcly_trio.workers.rtmp.RtmpServer` and/or an :class:`~arcly_trio.workers.http.HttpServer`
listening on ``127.0.0.1`` (port 0 is fine). Needs hypothesis (the ``test`` extra).
"""

from __future__ import annotations

import itertools
from typing import Any

import trio
from hypothesis import strategies as st

from arcly_trio.core.excgroups import unwrap_single
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.media import flv
from arcly_trio.protocols.rtmp import CommandReceived, DataMessage, MediaMessage
from arcly_trio.testing.actors import PublisherActor
from arcly_trio.testing.invariants import check_decodable
from arcly_trio.testing.races import EngineRaces
from arcly_trio.testing.rtmp import RawRtmpClient
from arcly_trio.transport import TRANSPORT_ERRORS
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer

__all__ = ["ServerRaces", "RtmpPublisherActor", "ProtocolPlayerActor"]

HOST = "127.0.0.1"
_RECV = 65536


def _body(frame: Frame) -> bytes:
    return flv.frame_body(frame)


def _query(token: str | None) -> str:
    return f"?token={token}" if token else ""


class _Rtmp(RawRtmpClient):
    """One RTMP client connection of a race actor."""

    async def start(self, port: int, app: str) -> int:
        await self.handshake()
        self.session.connect(app, f"rtmp://{HOST}:{port}/{app}")
        await self.flush()
        if (await self.command()).name != "_result":
            raise ConnectionError("connect refused")
        self.session.create_stream()
        await self.flush()
        return int((await self.command()).arguments[0])


class RtmpPublisherActor(PublisherActor):
    """A publisher over a real RTMP connection (see the module docstring)."""

    async def run(self) -> None:
        self.task = trio.lowlevel.current_task()
        races = self._races
        assert isinstance(races, ServerRaces) and races.rtmp is not None
        connection: _Rtmp | None = None
        try:
            with self.scope:
                connection = await _Rtmp.open(races.rtmp.port)  # type: ignore[arg-type]
                stream_id = await connection.start(races.rtmp.port, self.key.app)  # type: ignore[arg-type]
                connection.session.publish(stream_id, self.key.name + _query(self.credentials.token))
                await connection.flush()
                status = await connection.command()
                if status.info.get("code") != "NetStream.Publish.Start":
                    self.state = "refused"
                    return
                self.state = "active"
                self.was_active = True
                # (the server may end the connection while a send is under way: a takeover)
                with unwrap_single():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watch, connection, nursery.cancel_scope)
                        await self._obey(connection, stream_id)
                        nursery.cancel_scope.cancel()
        except TRANSPORT_ERRORS as exc:
            self.error = exc
            if self.state == "starting":
                self.state = "refused"
        finally:
            if connection is not None:
                await trio.aclose_forcefully(connection.stream)
            if self.state != "refused":
                self.state = "ended"
            self.task = None

    async def _obey(self, connection: _Rtmp, stream_id: int) -> None:
        async for command, frames in self._inbox:
            if command == "send":
                for frame in frames:
                    if frame.kind is FrameKind.DATA:
                        connection.session.send_data(stream_id, frame.dts, "@setDataFrame", *_amf0_values(frame))
                    else:
                        connection.session.send_media(stream_id, 9 if frame.is_video else 8, frame.dts, _body(frame))
                await connection.flush()
            elif command == "crash":  # half a message, then the socket goes
                connection.session.send_media(stream_id, 9, self._t, b"\x17\x01\x00\x00\x00" + bytes(9000))
                data = connection.session.data_to_send()
                await connection.stream.send_all(data[: len(data) // 2])
                return
            elif command == "close":
                return

    @staticmethod
    async def _watch(connection: _Rtmp, scope: trio.CancelScope) -> None:
        """Read what the server says (acknowledge it); the publish is over when it closes."""
        try:
            while data := await connection.stream.receive_some(_RECV):
                connection.session.receive_data(data)
                for _event in connection.session.events():
                    pass
        except TRANSPORT_ERRORS:
            pass
        scope.cancel()


def _amf0_values(frame: Frame) -> list[Any]:
    from arcly_trio.media import amf0

    return list(amf0.decode(frame.payload))


class ProtocolPlayerActor:
    """An RTMP or HTTP-FLV player over a real connection; records the FLV bodies it gets."""

    ids = itertools.count(1)

    def __init__(self, races: ServerRaces, key: StreamKey, protocol: str, token: str | None) -> None:
        self.id = next(self.ids)
        self.key = key
        self.protocol = protocol  # "rtmp" | "http-flv"
        self.token = token
        self.bodies: list[tuple[int, bytes]] = []
        """(timestamp, FLV body) of every frame received."""
        self.state = "starting"  # -> active -> ended | refused
        self.was_active = False
        self.scope = trio.CancelScope()
        self.task: trio.lowlevel.Task | None = None
        self._races = races

    async def run(self) -> None:
        self.task = trio.lowlevel.current_task()
        try:
            with self.scope:
                if self.protocol == "rtmp":
                    await self._rtmp()
                else:
                    await self._http()
        except (*TRANSPORT_ERRORS, flv.FlvError):
            pass
        finally:
            if self.state == "starting":
                self.state = "refused"
            elif self.state != "refused":
                self.state = "ended"
            self.task = None

    async def _rtmp(self) -> None:
        races = self._races
        assert races.rtmp is not None and races.rtmp.port is not None
        connection = await _Rtmp.open(races.rtmp.port)
        try:
            stream_id = await connection.start(races.rtmp.port, self.key.app)
            connection.session.play(stream_id, self.key.name + _query(self.token))
            await connection.flush()
            while True:
                data = await connection.stream.receive_some(_RECV)
                if not data:
                    return
                connection.session.receive_data(data)
                for event in connection.session.events():
                    if isinstance(event, CommandReceived) and event.info.get("code") == "NetStream.Play.Start":
                        self.state = "active"
                        self.was_active = True
                    elif isinstance(event, MediaMessage):
                        self.bodies.append((event.timestamp, event.payload))
                    elif isinstance(event, DataMessage) and not event.payload.startswith(
                        b"\x02\x00\x11|RtmpSampleAccess"
                    ):
                        self.bodies.append((event.timestamp, event.body))
                await connection.flush()
        finally:
            await trio.aclose_forcefully(connection.stream)

    async def _http(self) -> None:
        races = self._races
        assert races.http is not None and races.http.port is not None
        stream = await trio.open_tcp_stream(HOST, races.http.port)
        try:
            target = f"/{self.key.app}/{self.key.name}.flv{_query(self.token)}"
            await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(_RECV)
                if not data:
                    return
                head += data
            head, _, rest = head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return
            self.state = "active"
            self.was_active = True
            reader = flv.FlvReader()
            chunks = _Dechunker()
            data = rest
            while True:
                body = chunks.feed(data)
                if body:  # (an empty feed would tell the reader the stream ended)
                    reader.receive_data(body)
                while (event := reader.next_event()) is not None:
                    if isinstance(event, flv.FlvEnd):
                        return
                    if isinstance(event, flv.FlvTag):
                        self.bodies.append((event.timestamp, event.body))
                if chunks.done:
                    return
                data = await stream.receive_some(_RECV)
                if not data:
                    return
        finally:
            await trio.aclose_forcefully(stream)


class _Dechunker:
    """HTTP/1.1 chunked transfer decoding, incremental."""

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = []
        while True:
            size_line, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                self.done = True
                self._buffer = b""
                break
            if len(rest) < size + 2:
                break
            out.append(rest[:size])
            self._buffer = rest[size + 2 :]
        return b"".join(out)


class ServerRaces(EngineRaces):
    """The race machine with protocol actors too (see the module docstring)."""

    weights = {
        **EngineRaces.weights,
        "step_rtmp_publish": 5,
        "step_rtmp_play": 4,
        "step_http_play": 4,
        "step_drop_player": 1,
        "step_half_handshake": 1,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rtmp = next((w for w in self.engine.workers if isinstance(w, RtmpServer)), None)
        self.http = next((w for w in self.engine.workers if isinstance(w, HttpServer)), None)
        self.players: list[ProtocolPlayerActor] = []
        self._half_scopes: list[trio.CancelScope] = []

    def step_rtmp_publish(self) -> None:
        if self.rtmp is None:
            return
        video = self.data.draw(st.sampled_from([(0,), (0,), (0, 1), ()]), label="video tracks")
        style = {
            "video_tracks": video,
            "audio": not video or self.data.draw(st.booleans(), label="audio"),
            "start": self.data.draw(st.sampled_from(["configs", "mid-gop", "bare"]), label="start"),
            "gop": self.data.draw(st.integers(2, 6), label="gop"),
        }
        credentials = self.setup.publish
        if self.setup.refused_publish is not None and self.data.draw(st.integers(0, 5), label="refused?") == 0:
            credentials = self.setup.refused_publish
        actor = RtmpPublisherActor(self, self.draw_key(), credentials, style)
        self.publishers.append(actor)
        self.nursery.start_soon(actor.run, name=f"race rtmp publisher {actor.id}")

    def _player(self, protocol: str) -> None:
        token = self.setup.play.token
        if self.setup.refused_play is not None and self.data.draw(st.integers(0, 5), label="refused?") == 5:
            token = self.setup.refused_play.token
        actor = ProtocolPlayerActor(self, self.draw_play_key(), protocol, token)
        self.players.append(actor)
        self.nursery.start_soon(actor.run, name=f"race {protocol} player {actor.id}")

    def step_rtmp_play(self) -> None:
        if self.rtmp is not None:
            self._player("rtmp")

    def step_http_play(self) -> None:
        if self.http is not None:
            self._player("http-flv")

    def step_drop_player(self) -> None:
        live = [a for a in self.players if a.state in ("starting", "active")]
        if live:
            self.data.draw(st.sampled_from(live), label="player").scope.cancel()

    def step_half_handshake(self) -> None:
        """A client that sends half a handshake and then nothing (until the server's timeout)."""
        if self.rtmp is None:
            return

        async def half() -> None:
            with trio.CancelScope() as scope:
                self._half_scopes.append(scope)
                try:
                    connection = await _Rtmp.open(self.rtmp.port)  # type: ignore[union-attr,arg-type]
                except OSError:  # the server is stopping (or refused it: its admission's choice)
                    return
                try:
                    await connection.handshake(cut=True)
                    await connection.stream.receive_some(_RECV)  # until the server gives up
                except (OSError, trio.BrokenResourceError):
                    pass
                finally:
                    await trio.aclose_forcefully(connection.stream)

        self.nursery.start_soon(half, name="race half handshake")

    # ----------------------------------------------------------------- invariants

    def check(self) -> None:
        super().check()
        for actor in self.players:
            if actor.task is None or actor.state in ("ended", "refused"):
                self.check_player(actor)
        for actor in self.players:
            if actor.state in ("ended", "refused"):
                assert actor.task is None, f"player {actor.id} ended but its task runs"

    def check_player(self, actor: ProtocolPlayerActor) -> None:
        if self.setup.refused_play is not None and actor.token == self.setup.refused_play.token:
            assert not actor.was_active and not actor.bodies, (
                f"{actor.protocol} player {actor.id} played {actor.key} with RaceSetup.refused_play"
            )
        delivered = self.recorder.by_key.get(actor.key, [])
        check_decodable(
            actor.bodies,
            delivered,
            self.session_of,  # type: ignore[arg-type]
            same=lambda f: f if isinstance(f, tuple) else (f.dts & 0xFFFFFFFF, _body(f)),
        )

    async def finish(self) -> None:
        for scope in self._half_scopes:
            scope.cancel()
        await super().finish()
        for actor in self.players:
            assert actor.state in ("ended", "refused"), (actor.protocol, actor.state)
            self.check_player(actor)
        for worker in (self.rtmp, self.http):
            if worker is not None:
                assert worker.open_connections == 0, f"{worker} has {worker.open_connections} connections left"
