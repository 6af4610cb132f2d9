"""The one mapping of trio's transport errors (``arcly_trio.transport.errors``)."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing

from arcly_trio.core.errors import ArclyError, CannotListen, ClientGone, ConnectionLost, PeerGone
from arcly_trio.transport import TRANSPORT_ERRORS, describe, map_transport_errors


@pytest.mark.parametrize(
    "error",
    [
        trio.BrokenResourceError("connection reset"),
        trio.ClosedResourceError(),
        ConnectionResetError(104, "Connection reset by peer"),
        BrokenPipeError(32, "Broken pipe"),
        ssl.SSLError(1, "bad record mac"),
        OSError(9, "Bad file descriptor"),
    ],
)
def test_every_transport_error_becomes_the_asked_one(error: Exception) -> None:
    assert isinstance(error, TRANSPORT_ERRORS)
    with pytest.raises(PeerGone) as caught:
        with map_transport_errors(PeerGone):
            raise error
    assert str(caught.value) == describe(error)
    assert caught.value.__context__ is error and caught.value.__suppress_context__


def test_describe_names_the_type_when_the_error_says_nothing() -> None:
    assert describe(trio.ClosedResourceError()) == "ClosedResourceError"
    assert describe(trio.BrokenResourceError("gone")) == "gone"


def test_the_mapping_may_build_the_error_from_the_reason() -> None:
    with pytest.raises(ConnectionLost, match="rtmp://host/live: connection broken: reset"):
        with map_transport_errors(lambda reason: ConnectionLost(f"rtmp://host/live: connection broken: {reason}")):
            raise trio.BrokenResourceError("reset")


@pytest.mark.parametrize(
    "error",
    [
        PeerGone("already ours"),
        CannotListen("rtmp", "::", 1935, 98, "Address already in use"),  # ours, and an OSError too
    ],
)
def test_our_own_errors_pass_unchanged(error: ArclyError) -> None:
    with pytest.raises(type(error)) as caught:
        with map_transport_errors(ClientGone):
            raise error
    assert caught.value is error


@pytest.mark.parametrize("error", [ValueError("not transport"), trio.TooSlowError(), KeyError("x")])
def test_other_errors_pass_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)) as caught:
        with map_transport_errors(PeerGone):
            raise error
    assert caught.value is error


def test_nothing_raised_nothing_mapped() -> None:
    with map_transport_errors(PeerGone):
        pass


async def test_a_real_stream_broken_by_its_peer_maps_to_peer_gone() -> None:
    left, right = trio.testing.memory_stream_pair()
    await right.aclose()
    with pytest.raises(PeerGone):
        with map_transport_errors(PeerGone):
            await left.send_all(b"hello")
    await left.aclose()
    with pytest.raises(PeerGone, match="ClosedResourceError|closed"):
        with map_transport_errors(PeerGone):
            await left.receive_some(10)
