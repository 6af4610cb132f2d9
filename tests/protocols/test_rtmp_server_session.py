"""Tests of the RTMP server session (command state machine) and of the test client."""

from __future__ import annotations

import ast
import inspect
import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.budget import ByteBudget
from arcly_trio.core.errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError
from arcly_trio.media import amf0
from arcly_trio.protocols.rtmp import (
    CSID_AUDIO,
    CSID_DATA,
    CSID_VIDEO,
    BufferLengthChanged,
    ClientSession,
    CommandReceived,
    ConnectRequest,
    ControlReceived,
    DataMessage,
    Event,
    MediaMessage,
    PauseRequest,
    PingResponseReceived,
    PlayRequest,
    PublishRequest,
    ServerSession,
    StreamCloseRequested,
    StreamCreated,
    StreamDeleted,
    StreamUnpublishRequested,
    UnknownCommand,
    UserControlReceived,
    server_session,
)
from arcly_trio.protocols.rtmp import messages as m
from arcly_trio.protocols.rtmp.chunks import chunk_message
from arcly_trio.protocols.rtmp.server_states import (
    CONNECTION_TRANSITIONS,
    STREAM_TRANSITIONS,
    ConnectionState,
    ConnectionTrigger,
    StreamState,
    StreamTrigger,
    next_connection_state,
    next_stream_state,
)

MASK32 = 0xFFFFFFFF


def pump(source: ServerSession | ClientSession, target: ServerSession | ClientSession) -> bytes:
    data = source.data_to_send()
    if data:
        target.receive_data(data)
    return data


def drain(session: ServerSession | ClientSession) -> list[Event]:
    return list(session.events())


def commands(events: list[Event]) -> list[tuple[str, float, Any, tuple[Any, ...]]]:
    return [(e.name, e.transaction_id, e.command_object, e.arguments) for e in events if isinstance(e, CommandReceived)]


def connected(**options: Any) -> tuple[ServerSession, ClientSession]:
    server = ServerSession(**options)
    client = ClientSession()
    client.connect("live")
    pump(client, server)
    [request] = drain(server)
    assert isinstance(request, ConnectRequest)
    server.accept_connect()
    pump(server, client)
    drain(client)
    return server, client


def created(server: ServerSession, client: ClientSession) -> int:
    client.create_stream()
    pump(client, server)
    [event] = drain(server)
    assert isinstance(event, StreamCreated)
    pump(server, client)
    drain(client)
    return event.stream_id


def publishing(name: str = "cam") -> tuple[ServerSession, ClientSession, int]:
    server, client = connected()
    stream_id = created(server, client)
    client.publish(stream_id, name)
    pump(client, server)
    [request] = drain(server)
    assert isinstance(request, PublishRequest)
    server.accept_publish(stream_id)
    pump(server, client)
    drain(client)
    return server, client, stream_id


def status(event: Event) -> tuple[int, str, str]:
    assert isinstance(event, CommandReceived) and event.name == "onStatus"
    assert event.transaction_id == 0 and event.command_object is None
    return event.stream_id, event.info["level"], event.info["code"]


# --------------------------------------------------------------------------------------------
# Conversations


def test_publish_conversation_like_ffmpeg() -> None:
    server = ServerSession()
    client = ClientSession()
    assert client.connect("live", "rtmp://example.com:1935/live") == 1.0
    pump(client, server)
    [request] = drain(server)
    assert request == ConnectRequest(
        1.0,
        "live",
        "rtmp://example.com:1935/live",
        {},
        {
            "app": "live",
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; arcly-trio)",
            "tcUrl": "rtmp://example.com:1935/live",
        },
    )
    assert server.out_chunk_size == 128
    server.accept_connect()
    assert server.out_chunk_size == 4096 and server.connected and server.app == "live"
    pump(server, client)
    events = drain(client)
    assert events[:3] == [
        ControlReceived(5, (2_500_000,)),
        ControlReceived(6, (2_500_000, 2)),
        ControlReceived(1, (4096,)),
    ]
    assert commands(events[3:]) == [
        (
            "_result",
            1.0,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0, "mode": 1.0},
            (
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0.0,
                },
            ),
        )
    ]
    assert client.in_chunk_size == 4096

    # FFmpeg sends these three together after the connect _result.
    client.release_stream("cam")
    client.fc_publish("cam")
    client.create_stream()
    pump(client, server)
    assert drain(server) == [StreamCreated(1, 4.0)]
    pump(server, client)
    assert commands(drain(client)) == [
        ("_result", 2.0, None, (amf0.UNDEFINED,)),
        ("onFCPublish", 0.0, None, ({"code": "NetStream.Publish.Start", "description": "cam"},)),
        ("_result", 3.0, None, (amf0.UNDEFINED,)),
        ("_result", 4.0, None, (1.0,)),  # FFmpeg's read_number_result: null, then a number
    ]

    client.publish(1, "cam?key=secret")
    pump(client, server)
    assert drain(server) == [PublishRequest(1, "cam", {"key": "secret"}, "live", 0.0)]
    assert server.awaiting_decision == ("publish", 1)
    server.accept_publish(1)
    assert server.streams == {1: "publishing"}
    pump(server, client)
    events = drain(client)
    assert events[0] == UserControlReceived(m.UserControlEvent.STREAM_BEGIN, 1)
    assert status(events[1]) == (1, "status", "NetStream.Publish.Start")
    assert len(events) == 2

    metadata = amf0.ECMAArray(width=1280.0, height=720.0, videocodecid=7.0)
    client.send_data(1, 0, "@setDataFrame", "onMetaData", metadata)
    client.send_media(1, 9, 0, b"\x17\x00\x00\x00\x00config")
    client.send_media(1, 8, 0, b"\xaf\x00\x12\x10")
    client.send_media(1, 9, 40, b"\x17\x01" + bytes(10000))
    pump(client, server)
    events = drain(server)
    assert events[0] == DataMessage(
        1,
        0,
        amf0.encode("@setDataFrame", "onMetaData", metadata),
        amf0.encode("onMetaData", metadata),
    )
    assert events[1:] == [
        MediaMessage(1, 9, 0, b"\x17\x00\x00\x00\x00config"),
        MediaMessage(1, 8, 0, b"\xaf\x00\x12\x10"),
        MediaMessage(1, 9, 40, b"\x17\x01" + bytes(10000)),
    ]

    # FFmpeg's rtmp_close: FCUnpublish then deleteStream.
    client.fc_unpublish("cam")
    client.delete_stream(1)
    pump(client, server)
    assert drain(server) == [StreamUnpublishRequested("cam", 5.0), StreamDeleted(1)]
    assert server.streams == {}
    pump(server, client)
    assert commands(drain(client)) == [
        (
            "onFCUnpublish",
            0.0,
            None,
            ({"code": "NetStream.Unpublish.Success", "description": "cam"},),
        ),
        ("_result", 5.0, None, (amf0.UNDEFINED,)),
    ]


def test_play_conversation_with_shared_prechunked_media() -> None:
    server, client = connected()
    stream_id = created(server, client)
    client.play(stream_id, "cam?token=t1", -2000.0)
    client.send_set_buffer_length(stream_id, 3000)  # FFmpeg sends this right after play
    pump(client, server)
    assert drain(server) == [PlayRequest(stream_id, "cam", {"token": "t1"}, -2000.0, -1.0, True, 0.0)]
    assert server.awaiting_decision == ("play", stream_id)
    server.accept_play(stream_id)
    assert drain(server) == [BufferLengthChanged(stream_id, 3000)]

    # The adapter writes data_to_send() first, then media chunked once for all subscribers.
    size = server.out_chunk_size
    shared = [
        chunk_message(CSID_VIDEO, 9, stream_id, 0, b"\x17\x00" + bytes(9000), size),
        chunk_message(CSID_AUDIO, 8, stream_id, 20, b"\xaf\x01" + bytes(300), size),
    ]
    client.receive_data(server.data_to_send() + b"".join(shared))
    events = drain(client)
    assert events[0] == UserControlReceived(m.UserControlEvent.STREAM_BEGIN, stream_id)
    assert status(events[1]) == (stream_id, "status", "NetStream.Play.Reset")
    assert status(events[2]) == (stream_id, "status", "NetStream.Play.Start")
    assert events[3] == DataMessage(
        stream_id,
        0,
        amf0.encode("|RtmpSampleAccess", True, True),
        amf0.encode("|RtmpSampleAccess", True, True),
    )
    assert events[4:] == [
        MediaMessage(stream_id, 9, 0, b"\x17\x00" + bytes(9000)),
        MediaMessage(stream_id, 8, 20, b"\xaf\x01" + bytes(300)),
    ]

    # Status messages interleaved with more shared media, then the end of the stream.
    server.send_on_status(stream_id, "status", "NetStream.Play.PublishNotify", "back")
    server.send_unpublish_notify(stream_id)
    client.receive_data(shared[0] + server.data_to_send() + shared[1])
    events = drain(client)
    assert isinstance(events[0], MediaMessage)
    assert status(events[1]) == (stream_id, "status", "NetStream.Play.PublishNotify")
    assert status(events[2]) == (stream_id, "status", "NetStream.Play.UnpublishNotify")
    assert events[3] == UserControlReceived(m.UserControlEvent.STREAM_EOF, stream_id)
    assert isinstance(events[4], MediaMessage)


def test_play_without_reset_skips_play_reset() -> None:
    server, client = connected()
    stream_id = created(server, client)
    client.play(stream_id, "cam", reset=False)
    pump(client, server)
    [request] = drain(server)
    assert isinstance(request, PlayRequest) and request.reset is False
    server.accept_play(stream_id)
    pump(server, client)
    codes = [e.info["code"] for e in drain(client) if isinstance(e, CommandReceived)]
    assert codes == ["NetStream.Play.Start"]


def test_reject_play_and_publish_with_error_status() -> None:
    server, client = connected()
    first = created(server, client)
    client.play(first, "nothing")
    pump(client, server)
    drain(server)
    server.reject_play(first)
    pump(server, client)
    events = [e for e in drain(client) if isinstance(e, CommandReceived)]
    second = created(server, client)
    client.publish(second, "taken")
    pump(client, server)
    drain(server)
    server.reject_publish(second, "NetStream.Publish.BadName", "Stream already publishing.")
    pump(server, client)
    events += [e for e in drain(client) if isinstance(e, CommandReceived)]
    assert [status(e) for e in events] == [
        (first, "error", "NetStream.Play.StreamNotFound"),
        (second, "error", "NetStream.Publish.BadName"),
    ]
    assert events[0].info["description"] == "No such stream: nothing."
    assert events[1].info["description"] == "Stream already publishing."
    assert server.streams == {first: "idle", second: "idle"}
    # A rejected stream may try again.
    client.publish(second, "other")
    pump(client, server)
    assert isinstance(drain(server)[0], PublishRequest)


def test_reject_connect() -> None:
    server = ServerSession()
    client = ClientSession()
    client.connect("private")
    pump(client, server)
    drain(server)
    server.reject_connect("bad token")
    pump(server, client)
    assert commands(drain(client)) == [
        (
            "_error",
            1.0,
            None,
            (
                {
                    "level": "error",
                    "code": "NetConnection.Connect.Rejected",
                    "description": "bad token",
                },
            ),
        )
    ]
    assert not server.connected
    client.create_stream()
    pump(client, server)
    with pytest.raises(RemoteProtocolError):
        drain(server)


def test_connect_query_from_app_and_tc_url() -> None:
    server = ServerSession()
    client = ClientSession()
    client.connect("live/?token=x&empty", "rtmp://h:1935/live/?token=y&z=1")
    pump(client, server)
    [request] = drain(server)
    assert isinstance(request, ConnectRequest)
    assert request.app == "live"
    assert request.query == {"token": "x", "empty": "", "z": "1"}


def test_decisions_pause_parsing_so_answers_keep_their_order() -> None:
    server = ServerSession()
    client = ClientSession()
    client.connect("live")
    client.create_stream()
    client.publish(1, "cam")  # a client that does not wait (publish on the id it expects)
    client.send_media(1, 9, 0, b"early")
    pump(client, server)
    assert isinstance(server.next_event(), ConnectRequest)
    assert server.next_event() is None
    assert server.awaiting_decision == ("connect", 0)
    with pytest.raises(LocalProtocolError):
        server.accept_publish(1)
    server.accept_connect()
    assert drain(server) == [
        StreamCreated(1, 2.0),
        PublishRequest(1, "cam", {}, "live", 0.0),
    ]
    server.accept_publish(1)
    assert drain(server) == [MediaMessage(1, 9, 0, b"early")]
    pump(server, client)
    results = [(e.name, e.transaction_id) for e in drain(client) if isinstance(e, CommandReceived)]
    assert results == [("_result", 1.0), ("_result", 2.0), ("onStatus", 0.0)]


def test_input_while_paused_is_bounded() -> None:
    server = ServerSession(max_paused_input=10_000)
    client = ClientSession()
    client.connect("live")
    pump(client, server)
    assert isinstance(server.next_event(), ConnectRequest)
    server.receive_data(bytes(10_000))
    with pytest.raises(MessageTooLarge):
        server.receive_data(b"\x00")
    with pytest.raises(LocalProtocolError):
        server.next_event()


def test_media_for_streams_not_publishing_is_dropped() -> None:
    server, client = connected()
    stream_id = created(server, client)
    client.send_media(stream_id, 9, 0, b"x")
    client.send_media(7, 8, 0, b"y")
    client.send_data(stream_id, 0, "onTextData", {"text": "hi"})
    pump(client, server)
    assert drain(server) == []
    assert server.dropped_messages == 3


def test_pause_close_and_delete_stream() -> None:
    server, client, stream_id = publishing()
    client.pause(stream_id, True, 1500.0)
    client.pause(stream_id, False, 1600.0)
    client.close_stream(stream_id)
    client.delete_stream(stream_id)
    client.delete_stream(42)  # unknown: ignored
    pump(client, server)
    assert drain(server) == [
        PauseRequest(stream_id, True, 1500.0),
        PauseRequest(stream_id, False, 1600.0),
        StreamCloseRequested(stream_id),
        StreamDeleted(stream_id),
    ]
    server.accept_pause(stream_id, True)
    server.accept_pause(stream_id, False)
    pump(server, client)
    events = drain(client)
    assert events[0] == UserControlReceived(m.UserControlEvent.STREAM_EOF, stream_id)
    assert status(events[1])[2] == "NetStream.Pause.Notify"
    assert events[2] == UserControlReceived(m.UserControlEvent.STREAM_BEGIN, stream_id)
    assert status(events[3])[2] == "NetStream.Unpause.Notify"


def test_stream_ids_are_allocated_and_limited() -> None:
    server, client = connected(max_streams=3)
    assert [created(server, client) for _ in range(3)] == [1, 2, 3]
    client.delete_stream(2)
    pump(client, server)
    assert drain(server) == [StreamDeleted(2)]
    assert created(server, client) == 4  # ids are not reused: late messages stay harmless
    client.create_stream()
    pump(client, server)
    with pytest.raises(RemoteProtocolError):
        drain(server)


def test_get_stream_length_and_fc_subscribe_are_answered() -> None:
    server, client = connected()
    client.call("getStreamLength", "cam")
    client.call("FCSubscribe", "cam")
    pump(client, server)
    assert drain(server) == []
    pump(server, client)
    assert commands(drain(client)) == [
        ("_result", 2.0, None, (0.0,)),
        ("_result", 3.0, None, (amf0.UNDEFINED,)),
    ]


def test_unknown_commands() -> None:
    server, client = connected()
    client.call("fooBar", 1.0, "x")
    client.call("receiveAudio", True, transaction_id=0.0, stream_id=1)
    client.call("_checkbw")
    pump(client, server)
    assert drain(server) == [
        UnknownCommand(0, "fooBar", 2.0, None, (1.0, "x")),
        UnknownCommand(1, "receiveAudio", 0.0, None, (True,)),
        UnknownCommand(0, "_checkbw", 3.0, None, ()),
    ]
    pump(server, client)
    assert commands(drain(client)) == [
        (
            "_error",
            2.0,
            None,
            (
                {
                    "level": "error",
                    "code": "NetConnection.Call.Failed",
                    "description": "Method not found (fooBar).",
                },
            ),
        )
    ]


def test_amf3_command_and_data_messages() -> None:
    server, client = connected()
    stream_id = created(server, client)
    payload = b"\x00" + amf0.encode("publish", 0.0, None, "cam", "live")
    client.send_message(3, m.MessageType.AMF3_COMMAND, stream_id, 0, payload)
    pump(client, server)
    assert drain(server) == [PublishRequest(stream_id, "cam", {}, "live", 0.0)]
    server.accept_publish(stream_id)
    body = amf0.encode("onMetaData", {"duration": 0.0})
    client.send_message(5, m.MessageType.AMF3_DATA, stream_id, 3, b"\x00" + body)
    pump(client, server)
    assert drain(server) == [DataMessage(stream_id, 3, body, body)]


def flv_tag(type_id: int, timestamp: int, body: bytes) -> bytes:
    header = (
        bytes([type_id])
        + len(body).to_bytes(3, "big")
        + (timestamp & 0xFFFFFF).to_bytes(3, "big")
        + bytes([timestamp >> 24])
        + b"\x00\x00\x00"
    )
    return header + body + struct.pack(">I", 11 + len(body))


def test_aggregate_messages_are_split_with_rebased_timestamps() -> None:
    server, client, stream_id = publishing()
    metadata = amf0.encode("onMetaData", {"width": 2.0})
    aggregate = (
        flv_tag(18, 1000, metadata)
        + flv_tag(9, 1000, b"\x17\x01v0")
        + flv_tag(8, 1010, b"\xaf\x01a0")
        + flv_tag(9, 1033, b"\x27\x01v1")[:-4]  # the last back pointer may be missing
    )
    client.send_message(CSID_VIDEO, m.MessageType.AGGREGATE, stream_id, 5000, aggregate)
    pump(client, server)
    assert drain(server) == [
        DataMessage(stream_id, 5000, metadata, metadata),
        MediaMessage(stream_id, 9, 5000, b"\x17\x01v0"),
        MediaMessage(stream_id, 8, 5010, b"\xaf\x01a0"),
        MediaMessage(stream_id, 9, 5033, b"\x27\x01v1"),
    ]


@pytest.mark.parametrize(
    "aggregate",
    [
        b"\x09\x00\x00",  # header cut short
        flv_tag(9, 0, b"abc")[:13],  # body cut short
        flv_tag(9, 0, b"abc")[:-2],  # back pointer cut short
    ],
)
def test_malformed_aggregate(aggregate: bytes) -> None:
    server, client, stream_id = publishing()
    client.send_message(CSID_VIDEO, m.MessageType.AGGREGATE, stream_id, 0, aggregate)
    pump(client, server)
    with pytest.raises(RemoteProtocolError):
        drain(server)


def test_media_timestamps_are_unwrapped_past_32_bits() -> None:
    server, client, stream_id = publishing()
    stamps = [MASK32 - 100, MASK32 - 60, MASK32 - 70, 20, 0x7FFFFFFF, 0x80000000 + 50, MASK32, 5]
    for stamp in stamps:
        client.send_media(stream_id, 9, stamp, b"v")
    pump(client, server)
    got = [e.timestamp for e in drain(server) if isinstance(e, MediaMessage)]
    wrap = 1 << 32
    assert got == [
        MASK32 - 100,
        MASK32 - 60,
        MASK32 - 70,
        wrap + 20,
        wrap + 0x7FFFFFFF,
        wrap + 0x80000000 + 50,
        wrap + MASK32,
        2 * wrap + 5,
    ]


# --------------------------------------------------------------------------------------------
# Protocol control handled by the session


def test_peer_set_chunk_size_is_honoured() -> None:
    server, client, stream_id = publishing()
    client.set_chunk_size(60000)
    client.send_media(stream_id, 9, 0, bytes(100_000))
    pump(client, server)
    assert drain(server) == [MediaMessage(stream_id, 9, 0, bytes(100_000))]
    assert server.in_chunk_size == 60000


def test_acknowledgement_sent_each_time_the_window_is_crossed() -> None:
    server, client, stream_id = publishing()
    client.send_window_ack_size(1000)
    pump(client, server)
    assert server.next_event() is None and server.peer_window_ack_size == 1000
    received = server.bytes_received
    last_ack = 0
    if received >= 1000:
        last_ack = received
    pump(server, client)
    acks = [e.values[0] for e in drain(client) if isinstance(e, ControlReceived) and e.type_id == 3]
    assert acks == ([received] if last_ack else [])
    for size in [10, 300, 700, 5, 2000, 999, 1, 1000, 4096]:
        client.send_media(stream_id, 8, 0, bytes(size))
        data = client.data_to_send()
        for piece in (data[: len(data) // 3], data[len(data) // 3 :]):
            server.receive_data(piece)
            received += len(piece)
            expected = []
            if received - last_ack >= 1000:
                last_ack = received
                expected = [received]
            pump(server, client)
            acks = [e.values[0] for e in drain(client) if isinstance(e, ControlReceived) and e.type_id == 3]
            assert acks == expected
    assert server.bytes_received == received
    assert len(drain(server)) == 9


def test_acknowledgement_exactly_at_the_window() -> None:
    server = ServerSession()
    window_message = chunk_message(2, 5, 0, 0, m.encode_window_ack_size(26), 128)
    assert len(window_message) == 16
    server.receive_data(window_message)
    assert server.next_event() is None
    assert server.data_to_send() == b""
    server.receive_data(bytes(9))  # 25 bytes: not yet
    assert server.data_to_send() == b""
    server.receive_data(bytes(1))  # 26 bytes: the window is reached
    assert server.data_to_send() == chunk_message(2, 3, 0, 0, m.encode_acknowledgement(26), 128)
    server.receive_data(bytes(25))
    assert server.data_to_send() == b""
    server.receive_data(bytes(30))
    assert server.data_to_send() == chunk_message(2, 3, 0, 0, m.encode_acknowledgement(81), 128)


def test_acknowledgement_sequence_number_wraps() -> None:
    server = ServerSession(initial_bytes_received=MASK32 - 9)
    client = ClientSession()
    client.send_window_ack_size(50)
    pump(client, server)
    drain(server)
    client.send_media(1, 8, 0, bytes(100))
    pump(client, server)
    drain(server)
    pump(server, client)
    acks = [e.values[0] for e in drain(client) if isinstance(e, ControlReceived) and e.type_id == 3]
    assert server.bytes_received > 1 << 32
    assert acks == [server.bytes_received - (1 << 32)]


def test_acknowledgements_from_the_peer_are_recorded_and_unwrapped() -> None:
    server, client = connected()
    for sequence in [1000, 5000, MASK32 - 10, 20]:
        payload = m.encode_acknowledgement(sequence)
        client.send_message(2, m.MessageType.ACKNOWLEDGEMENT, 0, 0, payload)
    pump(client, server)
    assert drain(server) == []
    assert server.peer_acknowledged == (1 << 32) + 20


def test_ping_in_both_directions() -> None:
    server, client = connected()
    client.send_message(2, m.MessageType.USER_CONTROL, 0, 0, m.encode_user_control(6, 1234))
    pump(client, server)
    assert drain(server) == []
    pump(server, client)
    assert drain(client) == [UserControlReceived(m.UserControlEvent.PING_RESPONSE, 1234)]

    server.send_ping_request(99)
    pump(server, client)
    assert drain(client) == [UserControlReceived(m.UserControlEvent.PING_REQUEST, 99)]
    pump(client, server)  # the client answered by itself
    assert drain(server) == [PingResponseReceived(99)]


def test_peer_bandwidth_from_client_is_recorded() -> None:
    server, client = connected()
    payload = m.encode_set_peer_bandwidth(5000, 0)
    client.send_message(2, m.MessageType.SET_PEER_BANDWIDTH, 0, 0, payload)
    pump(client, server)
    drain(server)
    assert server.peer_bandwidth == (5000, 0)


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "payload",
    [
        amf0.encode("createStream", 1.0, None),  # before connect
        amf0.encode(1.0, 2.0),  # no command name
        amf0.encode("connect", "one", {"app": "x"}),  # transaction id not a number
        amf0.encode("connect", 1.0, None),  # no command object
        amf0.encode("connect", 1.0, {"app": 5.0}),  # app not a string
        b"\x02\x00\x05conn",  # truncated AMF0
        b"",
    ],
)
def test_malformed_or_early_commands(payload: bytes) -> None:
    server = ServerSession()
    server.receive_data(chunk_message(3, 20, 0, 0, payload, 128))
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.broken
    with pytest.raises(LocalProtocolError):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        server.send_stream_eof(1)
    assert server.data_to_send() == b""


@pytest.mark.parametrize(
    "payload",
    [
        amf0.encode("connect", 2.0, {"app": "live"}),  # a second connect
        amf0.encode("publish", 0.0, None, "cam"),  # publish on stream 0
        amf0.encode("play", 0.0, None),  # on stream 0 and without a name
    ],
)
def test_command_errors_after_connect(payload: bytes) -> None:
    server, client = connected()
    client.send_message(3, 20, 0, 0, payload)
    pump(client, server)
    with pytest.raises(RemoteProtocolError):
        drain(server)


def test_publish_without_name_and_busy_stream() -> None:
    server, client, stream_id = publishing()
    client.publish(stream_id, "again")
    client.play(stream_id, "again")
    pump(client, server)
    assert drain(server) == []
    pump(server, client)
    assert [status(e) for e in drain(client)] == [
        (stream_id, "error", "NetStream.Publish.BadName"),
        (stream_id, "error", "NetStream.Play.Failed"),
    ]
    client.call("publish", stream_id=stream_id, transaction_id=0.0)
    pump(client, server)
    with pytest.raises(RemoteProtocolError):
        drain(server)


def test_misuse_raises_local_protocol_error() -> None:
    server = ServerSession()
    for call in (
        server.accept_connect,
        lambda: server.reject_connect("x"),
        lambda: server.accept_publish(1),
        lambda: server.reject_publish(1),
        lambda: server.accept_play(1),
        lambda: server.reject_play(1),
    ):
        with pytest.raises(LocalProtocolError):
            call()
    with pytest.raises(LocalProtocolError):
        ServerSession(chunk_size=128)
    with pytest.raises(LocalProtocolError):
        ServerSession(max_streams=0)
    with pytest.raises(LocalProtocolError):
        server.send_message(1, 9, 1, 0, b"")


# --------------------------------------------------------------------------------------------
# Properties


def script_bytes(chunk_size: int, media: list[tuple[int, int, bytes]]) -> bytes:
    """A whole publishing client's bytes, written without waiting for answers."""
    client = ClientSession()
    client.set_chunk_size(chunk_size)
    client.connect("live?k=v")
    client.release_stream("cam")
    client.fc_publish("cam")
    client.create_stream()
    client.publish(1, "cam")
    client.send_data(1, 0, "@setDataFrame", "onMetaData", amf0.ECMAArray(duration=0.0))
    for type_id, stamp, payload in media:
        client.send_media(1, type_id, stamp, payload)
    client.send_window_ack_size(5000)
    client.send_message(2, m.MessageType.USER_CONTROL, 0, 0, m.encode_user_control(6, 77))
    client.pause(1, True, 10.0)
    client.fc_unpublish("cam")
    client.delete_stream(1)
    return client.data_to_send()


def run_server(data: bytes, splits: list[int]) -> tuple[list[Event], bytes]:
    """Feed ``data`` at ``splits``, accept every decision at once; events and output bytes.

    Any chunk size is allowed here (the reader's whole range is exercised), not only >= 128."""
    server = ServerSession(min_chunk_size=1)
    events: list[Event] = []
    previous = 0
    for cut in [*splits, len(data)]:
        server.receive_data(data[previous:cut])
        previous = cut
        while True:
            event = server.next_event()
            if event is None:
                break
            events.append(event)
            if isinstance(event, ConnectRequest):
                server.accept_connect()
            elif isinstance(event, PublishRequest):
                server.accept_publish(event.stream_id)
            elif isinstance(event, PlayRequest):
                server.accept_play(event.stream_id)
    return events, server.data_to_send()


media_items = st.lists(
    st.tuples(st.sampled_from([8, 9]), st.integers(0, MASK32), st.binary(max_size=3000)),
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_size=st.integers(1, 5000), media=media_items, data=st.data())
def test_any_split_of_a_conversation_gives_the_same_events(
    chunk_size: int, media: list[tuple[int, int, bytes]], data: st.DataObject
) -> None:
    wire = script_bytes(chunk_size, media)
    whole_events, whole_output = run_server(wire, [])
    splits = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    split_events, split_output = run_server(wire, splits)
    assert split_events == whole_events
    assert [type(e).__name__ for e in whole_events] == [
        "ConnectRequest",
        "StreamCreated",
        "PublishRequest",
        "DataMessage",
        *["MediaMessage"] * len(media),
        "PauseRequest",
        "StreamUnpublishRequested",
        "StreamDeleted",
    ]
    # Acknowledgements depend on where the input was cut; everything else must not.
    if len(wire) < 5000:
        assert split_output == whole_output


amf_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=False),
        st.sampled_from([0.0, 1.0, 2.0, -1.0, 3.5]),
        st.text(max_size=20),
        st.sampled_from(["cam", "cam?x=1", "live", "", "@setDataFrame"]),
        st.just(amf0.UNDEFINED),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["app", "tcUrl", "level", "code", "x"]), inner, max_size=4),
    ),
    max_leaves=10,
)
command_names = st.sampled_from(
    [
        "connect",
        "createStream",
        "publish",
        "play",
        "pause",
        "deleteStream",
        "closeStream",
        "releaseStream",
        "FCPublish",
        "FCUnpublish",
        "FCSubscribe",
        "getStreamLength",
        "_result",
        "onStatus",
        "whatever",
    ]
)
raw_messages = st.one_of(
    st.tuples(
        st.just(20),
        st.integers(0, 3),
        st.tuples(command_names, amf_values, amf_values, st.lists(amf_values, max_size=4)).map(
            lambda c: amf0.encode(c[0], c[1], c[2], *c[3])
        ),
    ),
    st.tuples(
        st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 22, 99]),
        st.integers(0, 3),
        st.binary(max_size=40),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(raw_messages, max_size=12), connect_first=st.booleans())
def test_arbitrary_messages_raise_only_remote_protocol_errors(
    messages: list[tuple[int, int, bytes]], connect_first: bool
) -> None:
    wire = b""
    if connect_first:
        wire = chunk_message(3, 20, 0, 0, amf0.encode("connect", 1.0, {"app": "live"}), 128)
        wire += chunk_message(3, 20, 0, 0, amf0.encode("createStream", 2.0, None), 128)
    for type_id, stream_id, payload in messages:
        wire += chunk_message(3, type_id, stream_id, 0, payload, 128)
    try:
        run_server(wire, [])
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_remote_protocol_errors(data: bytes) -> None:
    for session in (ServerSession(), ClientSession()):
        try:
            session.receive_data(data)
            drain(session)
        except RemoteProtocolError:
            assert session.broken


# --------------------------------------------------------------------------------------------
# Interop with FFmpeg (the session behind a minimal trio server; handshake from .handshake)


async def _serve_rtmp(stream: Any, recorded: list[Event], to_play: list[Event], done: Any) -> None:
    """Drive one connection: accept everything; record a publish, or play back ``to_play``."""
    import trio

    from arcly_trio.protocols.rtmp.handshake import ServerHandshake

    try:
        handshake = ServerHandshake()
        while not handshake.complete:
            data = await stream.receive_some(65536)
            if not data:
                return
            handshake.receive_data(data)
            await stream.send_all(handshake.data_to_send())
        session = ServerSession()
        session.receive_data(handshake.leftover())
        while True:
            for event in session.events():
                recorded.append(event)
                if isinstance(event, ConnectRequest):
                    session.accept_connect()
                elif isinstance(event, PublishRequest):
                    session.accept_publish(event.stream_id)
                elif isinstance(event, PlayRequest):
                    session.accept_play(event.stream_id)
                    shared = []
                    for item in to_play:
                        if isinstance(item, DataMessage):
                            shared.append(
                                chunk_message(
                                    5,
                                    18,
                                    event.stream_id,
                                    item.timestamp,
                                    item.body,
                                    session.out_chunk_size,
                                )
                            )
                        elif isinstance(item, MediaMessage):
                            csid = CSID_VIDEO if item.type_id == 9 else CSID_AUDIO
                            shared.append(
                                chunk_message(
                                    csid,
                                    item.type_id,
                                    event.stream_id,
                                    item.timestamp,
                                    item.payload,
                                    session.out_chunk_size,
                                )
                            )
                    await stream.send_all(session.data_to_send())
                    await stream.send_all(b"".join(shared))
                    session.send_unpublish_notify(event.stream_id)
            out = session.data_to_send()
            if out:
                await stream.send_all(out)
            data = await stream.receive_some(65536)
            if not data:
                return
            session.receive_data(data)
    except trio.BrokenResourceError:
        return
    finally:
        done.set()


async def _run_with_server(argv_for_port: Any, to_play: list[Event]) -> tuple[list[Event], Any]:
    import trio

    recorded: list[Event] = []
    done = trio.Event()
    with trio.fail_after(30):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:

            async def handler(stream: Any) -> None:
                await _serve_rtmp(stream, recorded, to_play, done)

            nursery.start_soon(trio.serve_listeners, handler, listeners)
            result = await trio.run_process(argv_for_port(port), capture_stdout=True, capture_stderr=True, check=False)
            await done.wait()
            nursery.cancel_scope.cancel()
    return recorded, result


@pytest.mark.interop
async def test_ffmpeg_publishes_then_ffprobe_plays() -> None:
    from tests._tools import require_tool

    ffmpeg = require_tool("ffmpeg")
    ffprobe = require_tool("ffprobe")
    recorded, result = await _run_with_server(
        lambda port: [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
            "-f",
            "flv",
            f"rtmp://127.0.0.1:{port}/live/cam?token=abc",
        ],
        [],
    )
    assert result.returncode == 0, result.stderr.decode()
    connect = recorded[0]
    assert isinstance(connect, ConnectRequest) and connect.app == "live"
    publish = next(e for e in recorded if isinstance(e, PublishRequest))
    assert (publish.name, publish.query) == ("cam", {"token": "abc"})
    metadata = next(e for e in recorded if isinstance(e, DataMessage))
    assert metadata.values[:2] == ["@setDataFrame", "onMetaData"]
    assert metadata.values[2]["width"] == 160.0
    media = [e for e in recorded if isinstance(e, MediaMessage)]
    video = [e for e in media if e.type_id == 9]
    audio = [e for e in media if e.type_id == 8]
    assert video[0].payload[:2] == b"\x17\x00"  # AVC sequence header first
    assert audio[0].payload[:2] == b"\xaf\x00"  # AAC sequence header first
    assert len(video) >= 20 and len(audio) >= 20
    assert isinstance(recorded[-1], StreamDeleted)
    assert any(isinstance(e, StreamUnpublishRequested) for e in recorded)

    played, result = await _run_with_server(
        lambda port: [
            ffprobe,
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width",
            "-of",
            "csv=p=0",
            f"rtmp://127.0.0.1:{port}/live/cam",
        ],
        [metadata, *media],
    )
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(result.stdout.decode().split()) == ["aac", "h264,160"]
    request = next(e for e in played if isinstance(e, PlayRequest))
    assert request.name == "cam"


# --------------------------------------------------------------------------------------------
# Hardening: what a client may make the server hold before and while it publishes


def _flv_tag(type_id: int, timestamp: int, body: bytes) -> bytes:
    return (
        bytes([type_id])
        + len(body).to_bytes(3, "big")
        + (timestamp & 0xFFFFFF).to_bytes(3, "big")
        + bytes([timestamp >> 24 & 0xFF, 0, 0, 0])
        + body
        + (11 + len(body)).to_bytes(4, "big")
    )


def test_before_connect_no_message_may_be_media_sized() -> None:
    """Attack: before ``connect``, a video message announced at 8 MiB. Refused at its header."""
    server = ServerSession()
    with pytest.raises(MessageTooLarge):
        server.receive_data(chunk_message(CSID_VIDEO, 9, 1, 0, bytes(8 * 1024 * 1024), 4096)[:200])
        server.next_event()


def test_setup_buffer_counts_real_bytes_until_publishing_then_media_limits_apply() -> None:
    server, client = connected(max_setup_buffer=100_000)
    stream_id = created(server, client)
    # A player-like connection may not send a media-sized message ...
    big = chunk_message(CSID_VIDEO, 9, stream_id, 0, bytes(200_000), 4096)
    probe = ServerSession(max_setup_buffer=100_000)
    probe.receive_data(chunk_message(2, 1, 0, 0, m.encode_set_chunk_size(4096), 128))
    with pytest.raises(MessageTooLarge):
        probe.receive_data(big[:5000])
        probe.next_event()
    # ... but once it publishes, the media limits apply.
    client.publish(stream_id, "cam")
    pump(client, server)
    [request] = drain(server)
    server.accept_publish(stream_id)
    assert server.publishing
    client.send_media(stream_id, 9, 0, b"\x17\x01" + bytes(200_000))
    pump(client, server)
    [media] = drain(server)
    assert isinstance(media, MediaMessage) and len(media.payload) == 200_002
    # closeStream: back to the setup limits.
    client.close_stream(stream_id)
    pump(client, server)
    drain(server)
    assert not server.publishing
    client.send_media(stream_id, 9, 0, b"\x17\x01" + bytes(200_000))
    with pytest.raises(MessageTooLarge):
        pump(client, server)
        drain(server)


def test_aggregate_sub_messages_are_held_to_their_own_limits() -> None:
    """Attack: onMetaData inside an 8 MiB aggregate message got past the 64 KiB data limit."""
    server, client, stream_id = publishing()
    metadata = amf0.encode("onMetaData", {"junk": "x" * 100_000})
    aggregate = _flv_tag(18, 0, metadata)
    client.send_message(CSID_VIDEO, m.MessageType.AGGREGATE, stream_id, 0, aggregate)
    with pytest.raises(MessageTooLarge):
        pump(client, server)
        drain(server)


def test_aggregate_sub_message_count_is_bounded() -> None:
    server, client, stream_id = publishing()
    tiny = _flv_tag(8, 0, b"\xaf\x01\x00")
    ok = tiny * 1024
    client.send_message(CSID_VIDEO, m.MessageType.AGGREGATE, stream_id, 0, ok)
    pump(client, server)
    assert len(drain(server)) == 1024
    client.send_message(CSID_VIDEO, m.MessageType.AGGREGATE, stream_id, 0, tiny * 1025)
    with pytest.raises(RemoteProtocolError):
        pump(client, server)
        drain(server)


def test_an_aggregate_for_a_stream_that_does_not_publish_is_not_split() -> None:
    server, client = connected()
    stream_id = created(server, client)
    garbage = b"\x08\xff\xff\xff" + bytes(100)  # would be malformed if it were split
    client.send_message(CSID_VIDEO, m.MessageType.AGGREGATE, stream_id, 0, garbage)
    pump(client, server)
    assert drain(server) == []
    assert server.dropped_messages == 1


def test_data_messages_are_passed_on_undecoded() -> None:
    """Metadata is decoded once, later, by whoever needs it: never here, per message."""
    server, client, stream_id = publishing()
    body = amf0.encode("onMetaData") + b"\x03\x00"  # an object cut short: not valid AMF0
    client.send_message(CSID_DATA, m.MessageType.AMF0_DATA, stream_id, 0, amf0.encode("@setDataFrame") + body)
    pump(client, server)
    [event] = drain(server)
    assert isinstance(event, DataMessage) and event.body == body
    with pytest.raises(RemoteProtocolError):
        event.values


def test_the_worker_budget_is_charged_and_given_back_on_close() -> None:
    budget = ByteBudget()
    server, client = connected(budget=budget)
    stream_id = created(server, client)
    client.publish(stream_id, "cam")
    pump(client, server)
    drain(server)
    server.accept_publish(stream_id)
    client.send_media(stream_id, 9, 0, b"\x17\x01" + bytes(50_000))
    wire = client.data_to_send()
    server.receive_data(wire[:-100])
    drain(server)
    assert budget.used > 40_000
    server.close()
    assert budget.used == 0


# ------------------------------------------------------------ (merged)
SECOND_CONNECT = amf0.encode("connect", 2.0, {"app": "live"})


def session_in(state: ConnectionState) -> tuple[ServerSession, ClientSession]:
    """A server session brought to ``state`` by a real conversation."""
    server, client = ServerSession(), ClientSession()
    if state is ConnectionState.NEW:
        return server, client
    client.connect("live")
    pump(client, server)
    assert [type(event) for event in server.events()] == [ConnectRequest]
    if state is ConnectionState.CONNECTED:
        server.accept_connect()
    elif state is ConnectionState.REJECTED:
        server.reject_connect("no")
    assert server.state is state
    return server, client


def apply(server: ServerSession, client: ClientSession, trigger: ConnectionTrigger) -> None:
    """Cause ``trigger`` through the session's public side: the peer's bytes or the server's call."""
    if trigger is ConnectionTrigger.CONNECT:
        if server.state is ConnectionState.NEW:
            client.connect("live")
        else:
            client.send_message(3, 20, 0, 0, SECOND_CONNECT)
        pump(client, server)
        list(server.events())
    elif trigger is ConnectionTrigger.ACCEPT:
        server.accept_connect()
    else:
        server.reject_connect("no")


def test_the_table_names_every_legal_move() -> None:
    assert CONNECTION_TRANSITIONS == {
        (ConnectionState.NEW, ConnectionTrigger.CONNECT): ConnectionState.CONNECT_PENDING,
        (ConnectionState.CONNECT_PENDING, ConnectionTrigger.ACCEPT): ConnectionState.CONNECTED,
        (ConnectionState.CONNECT_PENDING, ConnectionTrigger.REJECT): ConnectionState.REJECTED,
    }


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(ConnectionState, ConnectionTrigger)))
def test_every_move_is_in_the_table_or_refused(state: ConnectionState, trigger: ConnectionTrigger) -> None:
    if (state, trigger) in CONNECTION_TRANSITIONS:
        assert next_connection_state(state, trigger) is CONNECTION_TRANSITIONS[state, trigger]
        return
    expected = RemoteProtocolError if trigger is ConnectionTrigger.CONNECT else LocalProtocolError
    with pytest.raises(expected, match=state.value):
        next_connection_state(state, trigger)


@pytest.mark.parametrize(("state", "trigger"), list(CONNECTION_TRANSITIONS))
def test_every_legal_move_works_in_a_session(state: ConnectionState, trigger: ConnectionTrigger) -> None:
    server, client = session_in(state)
    apply(server, client, trigger)
    assert server.state is CONNECTION_TRANSITIONS[state, trigger]
    assert server.connected is (server.state is ConnectionState.CONNECTED)


@pytest.mark.parametrize("state", [ConnectionState.CONNECTED, ConnectionState.REJECTED])
def test_a_second_connect_is_the_peers_protocol_error(state: ConnectionState) -> None:
    server, client = session_in(state)
    with pytest.raises(RemoteProtocolError, match="a second connect on one connection"):
        apply(server, client, ConnectionTrigger.CONNECT)
    assert server.state is state


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (state, trigger)
        for state, trigger in itertools.product(ConnectionState, [ConnectionTrigger.ACCEPT, ConnectionTrigger.REJECT])
        if (state, trigger) not in CONNECTION_TRANSITIONS
    ],
)
def test_accepting_or_rejecting_without_a_connect_is_the_callers_error(
    state: ConnectionState, trigger: ConnectionTrigger
) -> None:
    server, client = session_in(state)
    with pytest.raises(LocalProtocolError):
        apply(server, client, trigger)
    assert server.state is state


def test_the_connection_state_is_assigned_in_one_place() -> None:
    """Besides the initial ``NEW``, only the method that applies the table sets the state."""
    tree = ast.parse(inspect.getsource(server_session))
    setters = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Assign) and any(
                    ast.unparse(target) == "self._state" for target in node.targets
                ):
                    setters.append((function.name, ast.unparse(node.value)))
    assert sorted(setters) == [
        ("__init__", "ConnectionState.NEW"),
        ("_advance", "next_connection_state(self._state, trigger)"),
    ]


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(StreamState, StreamTrigger)))
def test_every_stream_move_is_in_the_table_or_the_callers_error(state: StreamState, trigger: StreamTrigger) -> None:
    if (state, trigger) in STREAM_TRANSITIONS:
        assert next_stream_state(state, trigger) is STREAM_TRANSITIONS[state, trigger]
        return
    with pytest.raises(LocalProtocolError, match=f"a {state.value} stream cannot {trigger.value}"):
        next_stream_state(state, trigger)
