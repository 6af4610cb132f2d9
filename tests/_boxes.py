"""An independent ISO BMFF reader: boxes, full boxes, fragments (``moof`` + ``mdat`` with the samples
``trun`` points at), init segments and MPEG-4 descriptors; written from ISO/IEC 14496-12, not from
``arcly_trio.media.fmp4``.

Error policy: malformed input fails an ``assert`` (it is a test oracle, not a parser).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONTAINERS = {"moov", "trak", "mdia", "minf", "dinf", "stbl", "mvex", "moof", "traf", "edts"}


VISUAL_ENTRIES = {"avc1", "hvc1", "av01", "vp09"}


AUDIO_ENTRIES = {"mp4a", "Opus"}


@dataclass
class Box:
    type: str
    offset: int  # of the box header, from the start of the parsed buffer
    size: int
    body: bytes  # everything after the header
    children: list[Box] = field(default_factory=list)

    def all(self, kind: str) -> list[Box]:
        return [c for c in self.children if c.type == kind]

    def one(self, kind: str) -> Box:
        found = self.all(kind)
        assert len(found) == 1, f"{self.type} has {len(found)} {kind} boxes"
        return found[0]

    def path(self, *kinds: str) -> Box:
        box = self
        for kind in kinds:
            box = box.one(kind)
        return box


def read_boxes(data: bytes, base: int = 0) -> list[Box]:
    """Every box of ``data``; each size must be at least its header and the boxes must tile the
    buffer exactly. Containers, ``stsd``/``dref`` entries and sample entries are descended."""
    boxes: list[Box] = []
    pos = 0
    while pos < len(data):
        assert pos + 8 <= len(data), "truncated box header"
        size, raw = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        assert size >= header, f"box {raw!r} of size {size}"
        assert pos + size <= len(data), f"box {raw!r} of size {size} overruns its parent"
        kind = raw.decode("latin-1")
        body = data[pos + header : pos + size]
        box = Box(kind, base + pos, size, body)
        inner = base + pos + header
        if kind in CONTAINERS:
            box.children = read_boxes(body, inner)
        elif kind in ("stsd", "dref"):
            count = struct.unpack_from(">I", body, 4)[0]
            box.children = read_boxes(body[8:], inner + 8)
            assert len(box.children) == count
        elif kind in VISUAL_ENTRIES:
            box.children = read_boxes(body[78:], inner + 78)
        elif kind in AUDIO_ENTRIES:
            box.children = read_boxes(body[28:], inner + 28)
        boxes.append(box)
        pos += size
    return boxes


def full_box(box: Box) -> tuple[int, int, bytes]:
    """(version, flags, the rest) of a FullBox."""
    word = struct.unpack_from(">I", box.body)[0]
    return word >> 24, word & 0xFFFFFF, box.body[4:]


@dataclass
class Sample:
    duration: int
    size: int
    flags: int
    cto: int
    data: bytes = b""

    @property
    def sync(self) -> bool:
        return not self.flags & 0x00010000 and (self.flags >> 24) & 3 == 2


@dataclass
class Traf:
    track_id: int
    decode_time: int
    samples: list[Sample]

    @property
    def duration(self) -> int:
        return sum(s.duration for s in self.samples)


@dataclass
class ParsedFragment:
    sequence: int
    trafs: list[Traf]


def parse_trun(box: Box) -> tuple[int, int, list[Sample]]:
    """(version, data_offset, samples) of a trun; fields as its flags say."""
    version, flags, rest = full_box(box)
    count = struct.unpack_from(">I", rest)[0]
    pos = 4
    data_offset = 0
    if flags & 0x1:
        data_offset = struct.unpack_from(">i", rest, pos)[0]
        pos += 4
    first_flags = None
    if flags & 0x4:
        first_flags = struct.unpack_from(">I", rest, pos)[0]
        pos += 4
    samples = []
    for i in range(count):
        values = {}
        for bit, name, fmt in (
            (0x100, "duration", ">I"),
            (0x200, "size", ">I"),
            (0x400, "flags", ">I"),
            (0x800, "cto", ">i" if version else ">I"),
        ):
            if flags & bit:
                values[name] = struct.unpack_from(fmt, rest, pos)[0]
                pos += 4
        if first_flags is not None and i == 0:
            values["flags"] = first_flags
        samples.append(Sample(values.get("duration", 0), values.get("size", 0),
                              values.get("flags", 0), values.get("cto", 0)))  # fmt: skip
    assert pos == len(rest), "trun has trailing bytes"
    return version, data_offset, samples


def parse_fragment(data: bytes) -> ParsedFragment:
    """Parse one moof + mdat, check its structure and attach each sample's bytes, found with the
    trun data offset (relative to the moof: default-base-is-moof) and sizes."""
    top = read_boxes(data)
    assert [b.type for b in top] == ["moof", "mdat"]
    moof, mdat = top
    assert moof.offset == 0 and mdat.offset == moof.size
    version, flags, rest = full_box(moof.children[0])
    assert moof.children[0].type == "mfhd" and version == 0 and flags == 0
    sequence = struct.unpack(">I", rest)[0]
    mdat_start = mdat.offset + 8
    cursor = mdat_start  # runs must tile the mdat in order
    trafs = []
    for traf in moof.children[1:]:
        assert traf.type == "traf"
        assert [c.type for c in traf.children] == ["tfhd", "tfdt", "trun"]
        version, tfhd_flags, rest = full_box(traf.children[0])
        assert tfhd_flags & 0x020000, "default-base-is-moof"
        assert tfhd_flags & 0x1 == 0, "no base data offset"
        track_id = struct.unpack_from(">I", rest)[0]
        version, _, rest = full_box(traf.children[1])
        assert version == 1
        decode_time = struct.unpack(">Q", rest)[0]
        trun_version, data_offset, samples = parse_trun(traf.children[2])
        assert trun_version == 1
        assert data_offset == cursor, "data_offset does not point right after the previous run"
        for sample in samples:
            sample.data = data[cursor : cursor + sample.size]
            cursor += sample.size
        trafs.append(Traf(track_id, decode_time, samples))
    assert cursor == len(data), "mdat holds bytes no sample points at"
    return ParsedFragment(sequence, trafs)


def descriptors(data: bytes) -> list[tuple[int, bytes]]:
    """MPEG-4 descriptors (tag, body) with expandable sizes."""
    out = []
    pos = 0
    while pos < len(data):
        tag = data[pos]
        pos += 1
        size = 0
        for _ in range(4):
            byte = data[pos]
            pos += 1
            size = (size << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        out.append((tag, data[pos : pos + size]))
        pos += size
    assert pos == len(data)
    return out


def esds_config(esds: Box) -> bytes:
    """The DecoderSpecificInfo of an esds, checking the descriptor tree on the way."""
    _, _, rest = full_box(esds)
    [(tag, es)] = descriptors(rest)
    assert tag == 0x03
    assert es[2] == 0  # no dependency, URL or OCR stream
    (tag, dcd), (sl_tag, sl) = descriptors(es[3:])
    assert (tag, sl_tag, sl) == (0x04, 0x06, b"\x02")
    assert dcd[0] == 0x40 and dcd[1] >> 2 == 5  # MPEG-4 audio, audio stream
    [(tag, asc)] = descriptors(dcd[13:])
    assert tag == 0x05
    return asc


@dataclass
class InitInfo:
    major: bytes
    compatible: list[bytes]
    next_track_id: int
    traks: dict[int, Box]
    trex: dict[int, tuple[int, int, int, int]]


def parse_init(data: bytes) -> InitInfo:
    top = read_boxes(data)
    assert [b.type for b in top] == ["ftyp", "moov"]
    ftyp, moov = top
    major, minor = ftyp.body[:4], struct.unpack_from(">I", ftyp.body, 4)[0]
    assert minor == 0
    compatible = [ftyp.body[i : i + 4] for i in range(8, len(ftyp.body), 4)]
    kinds = [c.type for c in moov.children]
    assert kinds[0] == "mvhd" and kinds[-1] == "mvex" and set(kinds[1:-1]) == {"trak"}
    version, _, rest = full_box(moov.children[0])
    assert version == 0 and struct.unpack_from(">I", rest, 8)[0] == 1000
    next_track_id = struct.unpack_from(">I", rest, len(rest) - 4)[0]
    traks = {}
    for trak in moov.all("trak"):
        _, tkhd_flags, rest = full_box(trak.one("tkhd"))
        assert tkhd_flags & 0x3 == 0x3
        traks[struct.unpack_from(">I", rest, 8)[0]] = trak
    trex = {}
    for box in moov.one("mvex").all("trex"):
        _, _, rest = full_box(box)
        track_id, *defaults = struct.unpack(">IIIII", rest)
        trex[track_id] = tuple(defaults)
    return InitInfo(major, compatible, next_track_id, traks, trex)
