"""Tests of the RTMP chunk stream (reader, writers) and of the protocol control messages."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.budget import ByteBudget
from arcly_trio.core.errors import BudgetExceeded, LocalProtocolError, MessageTooLarge, RemoteProtocolError
from arcly_trio.protocols.rtmp import messages as m
from arcly_trio.protocols.rtmp.chunks import (
    ChunkReader,
    ChunkWriter,
    HeaderState,
    RtmpMessage,
    chunk_message,
    encode_message,
)

MASK32 = 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# An independent encoder for the tests: one list of chunks per message, built from the spec.


def basic(fmt: int, csid: int) -> bytes:
    if csid <= 63:
        return bytes([fmt << 6 | csid])
    if csid <= 319:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1]) + struct.pack("<H", csid - 64)


def chunk_units(
    csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes, chunk_size: int
) -> list[bytes]:
    """The chunks of one message (format 0 then format 3), each as its own bytes."""
    ext = b""
    field = timestamp
    if timestamp >= 0xFFFFFF:
        ext = struct.pack(">I", timestamp)
        field = 0xFFFFFF
    header = (
        basic(0, csid)
        + field.to_bytes(3, "big")
        + len(payload).to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", stream_id)
        + ext
    )
    units = [header + payload[:chunk_size]]
    for offset in range(chunk_size, len(payload), chunk_size):
        units.append(basic(3, csid) + ext + payload[offset : offset + chunk_size])
    return units


def read_all(data: bytes, splits: list[int] | None = None, **limits: int) -> list[RtmpMessage]:
    """Feed ``data`` cut at ``splits`` (sorted offsets) and collect every message."""
    reader = ChunkReader(**limits)
    out: list[RtmpMessage] = []
    previous = 0
    for cut in [*(splits or []), len(data)]:
        reader.receive_data(data[previous:cut])
        previous = cut
        out.extend(reader.messages())
    assert reader.next_message() is None
    return out


def cuts(data_size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, data_size), max_size=12).map(sorted)


# --------------------------------------------------------------------------------------------
# Byte vectors


def test_type0_header_layout_and_basic_header_sizes() -> None:
    for csid, size in [(2, 1), (63, 1), (64, 2), (319, 2), (320, 3), (65599, 3)]:
        data = chunk_message(csid, 9, 1, 1000, b"abc", 128)
        assert len(data) == size + 11 + 3
        assert data[size:] == b"\x00\x03\xe8\x00\x00\x03\x09\x01\x00\x00\x00abc"
        [message] = read_all(data)
        assert message == RtmpMessage(9, 1, 1000, b"abc", csid)


def test_spec_example_audio_messages_with_type2_and_type3_headers() -> None:
    """RTMP spec 5.3.2.1: one type 0, one type 2 (delta), then type 3 reusing the delta."""
    payload = bytes(32)
    data = (
        b"\x03"
        + (1000).to_bytes(3, "big")
        + (32).to_bytes(3, "big")
        + b"\x08"
        + b"\x0c\0\0\0"
        + payload
        + b"\x83"
        + (20).to_bytes(3, "big")
        + payload
        + b"\xc3"
        + payload
        + b"\xc3"
        + payload
    )
    stamps = [msg.timestamp for msg in read_all(data)]
    assert stamps == [1000, 1020, 1040, 1060]


def test_spec_example_message_split_in_chunks() -> None:
    """RTMP spec 5.3.2.2: a 307-byte video message, chunk size 128, type 3 continuations."""
    payload = bytes(range(256)) + bytes(51)
    data = b"".join(chunk_units(4, 9, 12346, 1000, payload, 128))
    assert len(data) == 12 + 307 + 2
    assert read_all(data) == [RtmpMessage(9, 12346, 1000, payload, 4)]


def test_extended_timestamp_repeated_on_type3_continuations() -> None:
    payload = bytes(range(200)) * 3
    data = chunk_message(5, 9, 1, 0x12345678, payload, 128)
    # Every continuation chunk is 0xC5 followed by the 4-byte extended timestamp.
    assert data.count(b"\xc5\x12\x34\x56\x78") == 4
    assert data == b"".join(chunk_units(5, 9, 1, 0x12345678, payload, 128))
    assert read_all(data) == [RtmpMessage(9, 1, 0x12345678, payload, 5)]


def test_timestamp_exactly_at_extended_threshold() -> None:
    for stamp in (0xFFFFFE, 0xFFFFFF, 0x1000000, MASK32):
        data = chunk_message(3, 8, 1, stamp, b"x" * 300, 128)
        assert read_all(data)[0].timestamp == stamp
        assert (b"\xff\xff\xff" in data[:4]) == (stamp >= 0xFFFFFF)


def test_type3_new_message_after_extended_type1_reads_the_extension_as_delta() -> None:
    first = chunk_message(6, 9, 1, 100, b"a", 128)
    # Format 1: delta 0x01000000 (extended), then format 3 (new message) repeating it.
    second = b"\x46\xff\xff\xff\x00\x00\x01\x09" + struct.pack(">I", 0x01000000) + b"b"
    third = b"\xc6" + struct.pack(">I", 0x01000000) + b"c"
    stamps = [msg.timestamp for msg in read_all(first + second + third)]
    assert stamps == [100, 100 + 0x01000000, 100 + 0x02000000]


def test_type3_new_message_after_type0_adds_the_absolute_field_like_ffmpeg() -> None:
    data = chunk_message(4, 8, 1, 40, b"a", 128) + b"\xc4" + b"b"
    assert [msg.timestamp for msg in read_all(data)] == [40, 80]


def test_timestamp_deltas_wrap_at_32_bits() -> None:
    first = chunk_message(4, 8, 1, MASK32 - 5, b"a", 128)
    second = b"\x84\x00\x00\x0a" + b"b"  # format 2, delta 10
    assert [msg.timestamp for msg in read_all(first + second)] == [MASK32 - 5, 4]


def test_format1_on_fresh_chunk_stream_is_accepted_like_librtmp() -> None:
    data = b"\x42\x00\x00\x00\x00\x00\x06\x04" + m.encode_user_control(7, 99)
    assert read_all(data) == [RtmpMessage(4, 0, 0, b"\x00\x07\x00\x00\x00\x63", 2)]


@pytest.mark.parametrize("data", [b"\x84\x00\x00\x00", b"\xc4"])
def test_format2_or_3_on_fresh_chunk_stream_is_an_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        read_all(data)


def test_continuation_with_a_different_length_is_an_error() -> None:
    units = chunk_units(4, 9, 1, 0, bytes(300), 128)
    bad = b"\x44\x00\x00\x00\x00\x00\x10\x09"  # format 1 announcing 16 bytes mid-message
    with pytest.raises(RemoteProtocolError):
        read_all(units[0] + bad + bytes(128))


def test_zero_length_message() -> None:
    data = chunk_message(3, 20, 0, 7, b"", 128) + chunk_message(3, 20, 0, 8, b"z", 128)
    assert read_all(data) == [RtmpMessage(20, 0, 7, b"", 3), RtmpMessage(20, 0, 8, b"z", 3)]


def test_interleaved_chunk_streams() -> None:
    video = chunk_units(6, 9, 1, 10, b"V" * 300, 128)
    audio = chunk_units(4, 8, 1, 11, b"A" * 200, 128)
    data = video[0] + audio[0] + video[1] + audio[1] + video[2]
    assert read_all(data) == [
        RtmpMessage(8, 1, 11, b"A" * 200, 4),
        RtmpMessage(9, 1, 10, b"V" * 300, 6),
    ]


# --------------------------------------------------------------------------------------------
# Set Chunk Size and Abort


def test_set_chunk_size_applies_to_the_next_chunk() -> None:
    payload = bytes(range(256)) * 20
    data = chunk_message(2, 1, 0, 0, m.encode_set_chunk_size(4096), 128) + chunk_message(6, 9, 1, 0, payload, 4096)
    reader = ChunkReader()
    reader.receive_data(data)
    first = reader.next_message()
    assert first is not None and first.type_id == 1
    assert reader.chunk_size == 4096
    assert reader.next_message() == RtmpMessage(9, 1, 0, payload, 6)


@pytest.mark.parametrize("payload", [b"\x00\x00\x00\x00", b"\x80\x00\x10\x00", b"\x00\x01"])
def test_bad_set_chunk_size(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        read_all(chunk_message(2, 1, 0, 0, payload, 128))


def test_set_chunk_size_over_the_limit() -> None:
    data = chunk_message(2, 1, 0, 0, m.encode_set_chunk_size(65537), 128)
    with pytest.raises(MessageTooLarge) as info:
        read_all(data)
    assert info.value.size == 65537 and info.value.limit == 65536
    assert read_all(data, max_chunk_size=1 << 20)[0].type_id == 1


def test_abort_drops_the_partial_message() -> None:
    units = chunk_units(6, 9, 1, 0, b"X" * 300, 128)
    abort = chunk_message(2, 2, 0, 0, m.encode_abort(6), 128)
    after = chunk_message(6, 9, 1, 5, b"Y" * 10, 128)
    messages = read_all(units[0] + abort + after)
    assert [msg.type_id for msg in messages] == [2, 9]
    assert messages[1].payload == b"Y" * 10
    # An abort of a chunk stream without a partial message is harmless.
    harmless = read_all(chunk_message(2, 2, 0, 0, m.encode_abort(9), 128))
    assert [msg.type_id for msg in harmless] == [2]


# --------------------------------------------------------------------------------------------
# Limits


@pytest.mark.parametrize(
    ("type_id", "size", "kind"),
    [(9, 8 * 1024 * 1024 + 1, "video"), (8, 1024 * 1024 + 1, "audio"), (20, 65537, "type 20")],
)
def test_oversized_message_rejected_from_its_header_alone(type_id: int, size: int, kind: str) -> None:
    header = b"\x06\x00\x00\x00" + size.to_bytes(3, "big") + bytes([type_id]) + b"\x01\0\0\0"
    reader = ChunkReader()
    reader.receive_data(header)  # no payload byte at all
    with pytest.raises(MessageTooLarge) as info:
        reader.next_message()
    assert (info.value.kind, info.value.size) == (kind, size)
    with pytest.raises(LocalProtocolError):
        reader.next_message()
    with pytest.raises(LocalProtocolError):
        reader.receive_data(b"x")


def test_limits_are_configurable() -> None:
    data = chunk_message(3, 20, 0, 0, bytes(70000), 65536)
    with pytest.raises(MessageTooLarge):
        read_all(data, max_chunk_size=65536)
    header = chunk_message(2, 1, 0, 0, m.encode_set_chunk_size(65536), 128)
    assert read_all(header + data, max_other_size=100000)[1].payload == bytes(70000)


def test_too_many_partial_messages() -> None:
    data = b"".join(chunk_units(10 + i, 9, 1, 0, bytes(200), 128)[0] for i in range(64))
    assert read_all(data) == []
    extra = chunk_units(200, 9, 1, 0, bytes(200), 128)[0]
    with pytest.raises(RemoteProtocolError):
        read_all(data + extra)


def test_partial_messages_bounded_by_the_bytes_really_held() -> None:
    # Three 1000-byte messages, each sent but for its last chunk: 3 x 896 bytes are held.
    data = b"".join(b"".join(chunk_units(10 + i, 9, 1, 0, bytes(1000), 128)[:-1]) for i in range(3))
    small = {"max_video_size": 1000, "max_audio_size": 1000, "max_other_size": 1000}
    with pytest.raises(MessageTooLarge):
        read_all(data, max_buffered_bytes=2600, **small)
    assert read_all(data, max_buffered_bytes=2700, **small) == []
    # What a header announces costs nothing until the bytes come.
    announced = b"".join(chunk_units(10 + i, 9, 1, 0, bytes(1000), 128)[0] for i in range(8))
    assert read_all(announced, max_buffered_bytes=1024, **small) == []


def test_a_partial_message_is_one_growing_buffer_not_a_list_of_chunks() -> None:
    """Mutant killed: keeping each chunk as its own bytes object (~24x the payload at chunk
    size 2 in CPython). The reader holds a message in one buffer, so tracemalloc sees about
    the payload's size, whatever the chunk size."""
    import tracemalloc

    payload = bytes(200_000)
    units = chunk_units(6, 9, 1, 0, payload, 2)
    reader = ChunkReader(max_video_size=1 << 20)
    reader.receive_data(m_chunk_size(2))
    assert reader.next_message() is not None
    tracemalloc.start()
    try:
        for unit in units[:-1]:
            reader.receive_data(unit)
            assert reader.next_message() is None
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reader.partial_bytes == len(payload) - 2
    assert held < 2 * len(payload), held


def test_a_shared_budget_counts_real_bytes_and_is_given_back() -> None:
    budget = ByteBudget(10_000)
    first, second = ChunkReader(budget=budget), ChunkReader(budget=budget)
    units = chunk_units(6, 9, 1, 0, bytes(8000), 128)
    first.receive_data(b"".join(units[:-1]))
    assert first.next_message() is None
    assert budget.used == 8000 - 64
    second.receive_data(b"".join(units[:20]))
    with pytest.raises(BudgetExceeded):
        second.next_message()
    second.close()
    assert budget.used == 8000 - 64
    first.receive_data(units[-1])
    message = first.next_message()
    assert message is not None and len(message.payload) == 8000
    assert budget.used == 0
    first.receive_data(b"".join(units[:-1]))
    assert first.next_message() is None and budget.used > 0
    first.close()  # the connection ends mid-message: every byte goes back
    assert budget.used == 0


def test_tiny_chunk_sizes_can_be_refused() -> None:
    data = m_chunk_size(2) + chunk_message(3, 20, 0, 0, b"x" * 10, 2)
    assert len(read_all(data)) == 2
    with pytest.raises(RemoteProtocolError):
        read_all(data, min_chunk_size=128)


def m_chunk_size(size: int) -> bytes:
    return chunk_message(2, 1, 0, 0, m.encode_set_chunk_size(size), 128)


def test_too_many_chunk_streams() -> None:
    data = b"".join(chunk_message(100 + i, 8, 1, 0, b"a", 128) for i in range(9))
    assert len(read_all(data, max_chunk_streams=9)) == 9
    with pytest.raises(RemoteProtocolError):
        read_all(data, max_chunk_streams=8)


def test_reader_argument_checks() -> None:
    with pytest.raises(LocalProtocolError):
        ChunkReader(max_chunk_size=10)
    with pytest.raises(LocalProtocolError):
        ChunkReader(max_video_size=0)
    with pytest.raises(LocalProtocolError):
        ChunkReader(max_buffered_bytes=10)


# --------------------------------------------------------------------------------------------
# Writers


def test_encoder_argument_checks() -> None:
    for args in [
        (1, 9, 1, 0, b"", 128),
        (65600, 9, 1, 0, b"", 128),
        (3, 256, 1, 0, b"", 128),
        (3, 9, -1, 0, b"", 128),
        (3, 9, 1, 0, b"", 0),
        (3, 9, 1, 0, bytes(1 << 24), 128),
    ]:
        with pytest.raises(LocalProtocolError):
            chunk_message(*args)
    with pytest.raises(LocalProtocolError):
        ChunkWriter(0)


def test_chunk_message_takes_timestamps_modulo_2_32() -> None:
    assert read_all(chunk_message(4, 8, 1, (1 << 32) + 5, b"a", 128))[0].timestamp == 5
    assert read_all(chunk_message(4, 8, 1, -1, b"a", 128))[0].timestamp == MASK32


def test_encode_message_header_formats() -> None:
    first, state = encode_message(4, 8, 1, 100, b"abcd", 128, prev=None)
    assert first[0] >> 6 == 0
    assert state == HeaderState(8, 1, 4, 100, 100)
    same, state = encode_message(4, 8, 1, 120, b"efgh", 128, prev=state)
    assert same == b"\x84\x00\x00\x14efgh"
    assert state.delta == 20
    longer, state = encode_message(4, 8, 1, 130, b"ijklmn", 128, prev=state)
    assert longer[0] >> 6 == 1
    backwards, _ = encode_message(4, 8, 1, 5, b"x", 128, prev=state)
    assert backwards[0] >> 6 == 0
    other_stream, _ = encode_message(4, 8, 2, 500, b"x", 128, prev=state)
    assert other_stream[0] >> 6 == 0
    assert [msg.timestamp for msg in read_all(first + same + longer + backwards)] == [
        100,
        120,
        130,
        5,
    ]


def test_chunk_writer_set_chunk_size() -> None:
    writer = ChunkWriter()
    data = writer.set_chunk_size(4096) + writer.write(6, 9, 1, 0, bytes(5000))
    assert writer.chunk_size == 4096
    messages = read_all(data)
    assert [len(msg.payload) for msg in messages] == [4, 5000]
    assert data.count(b"\xc6") >= 1 and len(data) == 12 + 4 + 12 + 5000 + 1


# --------------------------------------------------------------------------------------------
# Properties

csids = st.sampled_from([2, 3, 4, 5, 6, 63, 64, 65, 319, 320, 321, 65599])
timestamps = st.one_of(
    st.integers(0, 2000),
    st.integers(0xFFFFF0, 0x1000010),
    st.integers(0, MASK32),
)
message_specs = st.tuples(
    csids,
    st.sampled_from([8, 9, 18, 20, 22]),
    st.integers(0, MASK32),
    timestamps,
    st.binary(max_size=700),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(
        st.one_of(message_specs, st.integers(1, 65536).map(lambda size: ("chunk-size", size))),
        max_size=12,
    ),
    compress=st.booleans(),
    data=st.data(),
)
def test_round_trip_with_chunk_size_changes_and_random_splits(
    items: list[object], compress: bool, data: st.DataObject
) -> None:
    writer = ChunkWriter(compress=compress)
    first_size = data.draw(st.integers(1, 300))
    wire = writer.set_chunk_size(first_size)
    expected: list[tuple[int, int, int, int, bytes]] = [(2, 1, 0, 0, m.encode_set_chunk_size(first_size))]
    for item in items:
        if item[0] == "chunk-size":  # type: ignore[index]
            wire += writer.set_chunk_size(item[1])  # type: ignore[index]
            expected.append((2, 1, 0, 0, m.encode_set_chunk_size(item[1])))  # type: ignore[index]
        else:
            csid, type_id, stream_id, stamp, payload = item  # type: ignore[misc]
            wire += writer.write(csid, type_id, stream_id, stamp, payload)
            expected.append((csid, type_id, stream_id, stamp, payload))
    splits = data.draw(cuts(len(wire)))
    got = [(x.csid, x.type_id, x.stream_id, x.timestamp, x.payload) for x in read_all(wire, splits)]
    assert got == expected


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from([8, 9]),
            st.integers(0, MASK32),
            timestamps,
            st.binary(max_size=600),
        ),
        min_size=1,
        max_size=6,
    ),
    chunk_size=st.integers(1, 200),
    data=st.data(),
)
def test_interleaved_messages_on_distinct_chunk_streams(
    specs: list[tuple[int, int, int, bytes]], chunk_size: int, data: st.DataObject
) -> None:
    """Chunks of concurrent messages, interleaved at random, reassemble whatever the split."""
    queues = [
        chunk_units(10 + index, type_id, stream_id, stamp, payload, chunk_size)
        for index, (type_id, stream_id, stamp, payload) in enumerate(specs)
    ]
    prefix = chunk_message(2, 1, 0, 0, m.encode_set_chunk_size(chunk_size), 128)
    wire = [prefix]
    finished: list[int] = []
    while any(queues):
        index = data.draw(st.sampled_from([i for i, q in enumerate(queues) if q]))
        wire.append(queues[index].pop(0))
        if not queues[index]:
            finished.append(index)
    stream = b"".join(wire)
    messages = read_all(stream, data.draw(cuts(len(stream))))
    assert messages[0].type_id == 1
    assert [(x.csid, x.type_id, x.stream_id, x.timestamp, x.payload) for x in messages[1:]] == [
        (10 + i, *specs[i][:2], specs[i][2] & MASK32, specs[i][3]) for i in finished
    ]


@settings(max_examples=200, deadline=None)
@given(
    stamps=st.lists(st.integers(0, MASK32), min_size=1, max_size=8),
    chunk_size=st.integers(1, 64),
    data=st.data(),
)
def test_extended_timestamps_with_compressed_headers(stamps: list[int], chunk_size: int, data: st.DataObject) -> None:
    writer = ChunkWriter(compress=True)
    payloads = [data.draw(st.binary(max_size=150)) for _ in stamps]
    wire = writer.set_chunk_size(chunk_size)
    wire += b"".join(writer.write(7, 9, 1, s, p) for s, p in zip(stamps, payloads))
    got = read_all(wire, data.draw(cuts(len(wire))))[1:]
    assert [(x.timestamp, x.payload) for x in got] == list(zip(stamps, payloads))


def outcome(data: bytes, splits: list[int]) -> tuple[list[RtmpMessage], str | None]:
    reader = ChunkReader(max_chunk_size=4096, max_other_size=4096, max_partial_messages=4)
    out: list[RtmpMessage] = []
    previous = 0
    try:
        for cut in [*splits, len(data)]:
            reader.receive_data(data[previous:cut])
            previous = cut
            out.extend(reader.messages())
    except RemoteProtocolError as exc:
        return out, type(exc).__name__
    return out, None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), splits_data=st.data())
def test_arbitrary_bytes_raise_only_remote_protocol_errors_whatever_the_split(
    data: bytes, splits_data: st.DataObject
) -> None:
    whole = outcome(data, [])
    split = outcome(data, splits_data.draw(cuts(len(data))))
    assert whole == split


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.lists(message_specs, max_size=3),
    noise=st.binary(max_size=200),
    position=st.integers(0, 10_000),
)
def test_corrupted_valid_streams_raise_only_remote_protocol_errors(
    prefix: list[tuple[int, int, int, int, bytes]], noise: bytes, position: int
) -> None:
    wire = b"".join(chunk_message(*spec, 128) for spec in prefix)
    position = min(position, len(wire))
    outcome(wire[:position] + noise + wire[position:], [])


# --------------------------------------------------------------------------------------------
# Protocol control and user control messages


def test_control_message_round_trips() -> None:
    assert m.decode_set_chunk_size(m.encode_set_chunk_size(4096)) == 4096
    assert m.decode_abort(m.encode_abort(70)) == 70
    assert m.encode_acknowledgement((1 << 32) + 7) == b"\x00\x00\x00\x07"
    assert m.decode_acknowledgement(b"\xff\xff\xff\xff") == MASK32
    assert m.decode_window_ack_size(m.encode_window_ack_size(2_500_000)) == 2_500_000
    assert m.encode_set_peer_bandwidth(2_500_000) == b"\x00\x26\x25\xa0\x02"
    assert m.decode_set_peer_bandwidth(b"\x00\x26\x25\xa0\x00") == (2_500_000, 0)
    assert m.decode_set_peer_bandwidth(b"\x00\x26\x25\xa0") == (2_500_000, 2)
    assert m.encode_user_control(0, 1) == b"\x00\x00\x00\x00\x00\x01"
    assert m.encode_user_control(3, 1, 3000) == b"\x00\x03\x00\x00\x00\x01\x00\x00\x0b\xb8"
    assert m.decode_user_control(b"\x00\x03\x00\x00\x00\x01\x00\x00\x0b\xb8") == m.UserControl(3, 1, 3000)
    assert m.decode_user_control(m.encode_user_control(6, -1)) == m.UserControl(6, MASK32)
    assert m.decode_user_control(b"\x00\x1f\x00\x00\x00\x01") == m.UserControl(31, 1)
    assert m.decode_user_control(b"\x00\x1f") == m.UserControl(31, 0)
    assert m.MessageType.AGGREGATE == 22 and m.UserControlEvent.PING_RESPONSE == 7


@pytest.mark.parametrize(
    ("decoder", "payload"),
    [
        (m.decode_set_chunk_size, b"\x00\x00\x10"),
        (m.decode_abort, b""),
        (m.decode_acknowledgement, b"\x00"),
        (m.decode_window_ack_size, b"\x00\x00"),
        (m.decode_set_peer_bandwidth, b"\x00\x00\x00"),
        (m.decode_user_control, b"\x00"),
        (m.decode_user_control, b"\x00\x00\x00\x00\x01"),
        (m.decode_user_control, b"\x00\x03\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_short_control_payloads(decoder: object, payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decoder(payload)  # type: ignore[operator]


def test_control_encoder_argument_checks() -> None:
    for call in [
        lambda: m.encode_set_chunk_size(0),
        lambda: m.encode_set_chunk_size(1 << 31),
        lambda: m.encode_abort(-1),
        lambda: m.encode_window_ack_size(1 << 32),
        lambda: m.encode_set_peer_bandwidth(1, 256),
        lambda: m.encode_user_control(1 << 16),
        lambda: m.encode_user_control(0, 1 << 32),
        lambda: m.encode_user_control(3, 1, -1),
    ]:
        with pytest.raises(LocalProtocolError):
            call()


@given(st.binary(max_size=12))
def test_control_decoders_on_arbitrary_bytes(payload: bytes) -> None:
    for decoder in (
        m.decode_set_chunk_size,
        m.decode_abort,
        m.decode_acknowledgement,
        m.decode_window_ack_size,
        m.decode_set_peer_bandwidth,
        m.decode_user_control,
    ):
        try:
            decoder(payload)  # type: ignore[operator]
        except RemoteProtocolError:
            pass
