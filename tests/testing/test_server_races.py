"""The race machine over real connections: RTMP publishers and players and HTTP-FLV players
(dropping their sockets mid-handshake, mid-GOP, at any time) racing the in-process actors
against an engine with the RTMP and HTTP workers on loopback (see
:mod:`arcly_trio.testing.server_races`)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from arcly_trio import AppSpec, Credentials, Engine, Takeover, TokenAuthenticator
from arcly_trio.testing.races import RaceSetup, run_races
from arcly_trio.testing.server_races import ServerRaces
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer


def server_setup() -> RaceSetup:
    engine = (
        Engine.builder()
        .max_publishers(4)
        .idle_timeout(10)
        .application(AppSpec("live", gop_cache_frames=8))
        .application(AppSpec("rep", takeover=Takeover.REPLACE, reconnect_grace=5, lag_budget=6))
        .authenticator(TokenAuthenticator(publish_token="good", play_token="view"))
        .protocol(RtmpServer("127.0.0.1", 0))
        .protocol(HttpServer("127.0.0.1", 0))
        .build()
    )
    return RaceSetup(
        engine,
        publish=Credentials(token="good"),
        play=Credentials(token="view"),
        refused_publish=Credentials(token="bad"),
        refused_play=Credentials(token="nope"),
    )


@pytest.mark.timeout(600)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_races_over_real_connections_keep_the_server_consistent(data: st.DataObject) -> None:
    logging.getLogger("arcly_trio").setLevel(logging.ERROR)
    try:
        races = run_races(server_setup, data, machine=ServerRaces, max_steps=30)
    finally:
        logging.getLogger("arcly_trio").setLevel(logging.NOTSET)
    rtmp_published = [a for a in races.publishers if type(a).__name__ == "RtmpPublisherActor" and a.error is None]
    event(f"rtmp publishers that published: {min(len(rtmp_published), 3)}")
    event(f"protocol players that got frames: {min(sum(1 for p in races.players if p.bodies), 3)}")
