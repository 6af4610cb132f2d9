"""NAL units of H.264 and HEVC: their types, access units in AVCC/HVCC and Annex B (sans-IO).

* NAL unit type numbers and the access unit delimiters the MPEG-TS egress inserts.
* :func:`split_nal_units` cuts a length-prefixed (AVCC/HVCC) access unit into NAL units,
  :func:`annexb` / :func:`avcc_to_annexb` write them with start codes, :func:`nal_types`,
  :func:`has_idr`, :func:`has_aud`, :func:`has_parameter_sets` say what an access unit holds.
* :func:`parameter_set_list` reads the length-prefixed NAL unit arrays of avcC/hvcC, and
  :func:`crop_units` gives the cropping units both SPS parsers use.

Error policy: the bytes come from a peer: malformed input raises :class:`~.errors.CodecError`,
nothing else escapes on arbitrary bytes. A ``nal_length_size`` other than 1 to 4, or a codec
name other than ``h264``/``hevc``, is our own bug:
:class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Iterable

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.media.codecs.errors import CodecError

__all__ = [
    "H264_NAL_IDR",
    "H264_NAL_SEI",
    "H264_NAL_SPS",
    "H264_NAL_PPS",
    "H264_NAL_AUD",
    "HEVC_NAL_VPS",
    "HEVC_NAL_SPS",
    "HEVC_NAL_PPS",
    "HEVC_NAL_AUD",
    "H264_AUD",
    "HEVC_AUD",
    "MAX_DIMENSION",
    "MAX_NAL_UNITS",
    "split_nal_units",
    "annexb",
    "avcc_to_annexb",
    "nal_type",
    "nal_types",
    "has_idr",
    "has_aud",
    "has_parameter_sets",
    "parameter_set_list",
    "crop_units",
]

H264_NAL_IDR = 5
H264_NAL_SEI = 6
H264_NAL_SPS = 7
H264_NAL_PPS = 8
H264_NAL_AUD = 9

HEVC_NAL_VPS = 32
HEVC_NAL_SPS = 33
HEVC_NAL_PPS = 34
HEVC_NAL_AUD = 35
# IRAP pictures (BLA_W_LP .. CRA_NUT, plus the two reserved IRAP types): random access points.
_HEVC_IRAP = range(16, 24)

#: An H.264 access unit delimiter NAL unit (primary_pic_type 7: any slice type).
H264_AUD = b"\x09\xf0"
#: An HEVC access unit delimiter NAL unit (layer 0, temporal id 0, pic_type 2: I, P or B).
HEVC_AUD = b"\x46\x01\x50"

#: No real picture is wider or taller than this many samples.
MAX_DIMENSION = 1 << 16

_START_CODE = b"\x00\x00\x00\x01"

#: The most NAL units one access unit may hold (real encoders use a few dozen slices at most;
#: a frame of a million 1-byte NAL units would otherwise cost seconds to rewrite).
MAX_NAL_UNITS = 1024


def parameter_set_list(data: bytes, pos: int, count: int, what: str) -> tuple[list[bytes], int]:
    """``count`` NAL units, each after a 16-bit length, from ``pos``: ``(units, end)``."""
    items: list[bytes] = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise CodecError(f"{what} is truncated")
        size = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if pos + size > len(data):
            raise CodecError(f"{what} is truncated")
        items.append(bytes(data[pos : pos + size]))
        pos += size
    return items, pos


def crop_units(chroma_format: int, separate_planes: bool) -> tuple[int, int]:
    """SubWidthC and SubHeightC, or (1, 1) for monochrome or separate colour planes."""
    if separate_planes or chroma_format == 0:
        return 1, 1
    if chroma_format == 1:
        return 2, 2
    if chroma_format == 2:
        return 2, 1
    return 1, 1


def split_nal_units(data: bytes, nal_length_size: int = 4, max_units: int = MAX_NAL_UNITS) -> list[bytes]:
    """Cut a length-prefixed (AVCC/HVCC) access unit into its NAL units.

    Zero-length NAL units are dropped. A length that runs past the end, or more than
    ``max_units`` NAL units, raises :class:`CodecError` (so the work is bounded whatever the
    bytes); a ``nal_length_size`` other than 1 to 4 is a
    :class:`~arcly_trio.core.errors.LocalProtocolError`.
    """
    if not 1 <= nal_length_size <= 4:
        raise LocalProtocolError(f"nal_length_size must be 1 to 4, not {nal_length_size}")
    units: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if len(units) >= max_units:
            raise CodecError(f"access unit: more than {max_units} NAL units")
        if pos + nal_length_size > end:
            raise CodecError("access unit: truncated NAL unit length")
        size = int.from_bytes(data[pos : pos + nal_length_size], "big")
        pos += nal_length_size
        if pos + size > end:
            raise CodecError(f"access unit: NAL unit of {size} bytes runs past the end")
        if size:
            units.append(bytes(data[pos : pos + size]))
        pos += size
    return units


def annexb(nals: Iterable[bytes]) -> bytes:
    """Write NAL units in Annex B byte stream format (each after a 4-byte start code)."""
    return b"".join(_START_CODE + nal for nal in nals)


def avcc_to_annexb(data: bytes, nal_length_size: int = 4) -> bytes:
    """Convert a length-prefixed access unit to Annex B (see :func:`split_nal_units`)."""
    return annexb(split_nal_units(data, nal_length_size))


def _check_codec(codec: str) -> None:
    if codec not in ("h264", "hevc"):
        raise LocalProtocolError(f"not a NAL-unit codec: {codec!r}")


def nal_type(nal: bytes, codec: str) -> int:
    """The NAL unit type of ``nal`` for ``codec`` (``"h264"`` or ``"hevc"``); -1 if empty."""
    _check_codec(codec)
    if not nal:
        return -1
    return nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F


def nal_types(nals: Iterable[bytes], codec: str) -> list[int]:
    """The NAL unit types of an access unit, in order."""
    return [nal_type(nal, codec) for nal in nals]


def has_idr(nals: Iterable[bytes], codec: str) -> bool:
    """Whether the access unit holds a random access picture (H.264 IDR, HEVC IRAP)."""
    types = nal_types(nals, codec)
    if codec == "h264":
        return H264_NAL_IDR in types
    return any(t in _HEVC_IRAP for t in types)


def has_aud(nals: Iterable[bytes], codec: str) -> bool:
    """Whether the access unit holds an access unit delimiter."""
    aud = H264_NAL_AUD if codec == "h264" else HEVC_NAL_AUD
    return aud in nal_types(nals, codec)


def has_parameter_sets(nals: Iterable[bytes], codec: str) -> bool:
    """Whether the access unit carries every parameter set a decoder needs in-band
    (SPS and PPS for H.264; VPS, SPS and PPS for HEVC)."""
    types = set(nal_types(nals, codec))
    if codec == "h264":
        return {H264_NAL_SPS, H264_NAL_PPS} <= types
    return {HEVC_NAL_VPS, HEVC_NAL_SPS, HEVC_NAL_PPS} <= types
