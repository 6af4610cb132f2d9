"""AMF0 (Action Message Format, version 0): the value encoding of RTMP commands and metadata.

RTMP carries its commands (``connect``, ``createStream``, ``publish``...) and its data messages
(``@setDataFrame``/``onMetaData``) as a sequence of AMF0 values. This module turns such a
sequence into Python values and back; it does no I/O and keeps no state between calls.

Python mapping (both directions unless noted):

============================  ===========================================================
Python                        AMF0
============================  ===========================================================
``bool``                      boolean (0x01)
``int``, ``float``            number (0x00); decoding always gives ``float``
``str``                       string (0x02), or long string (0x0C) when its UTF-8 is over
                              65535 bytes; XML document (0x0F) decodes to ``str`` too
``dict`` (``str`` keys)       anonymous object (0x03)
:class:`ECMAArray`            ECMA array (0x08)
``list``, ``tuple``           strict array (0x0A); decoding gives ``list``
``None``                      null (0x05)
:data:`UNDEFINED`             undefined (0x06); the "unsupported" marker (0x0D) decodes to it
:class:`AMF0Date`             date (0x0B)
:class:`TypedObject`          typed object (0x10)
============================  ===========================================================

A reference (0x07) decodes to the very object it points at: objects, ECMA arrays, strict arrays
and typed objects are numbered in the order they start, from 0, per the AMF0 specification
(a reference may therefore build a cycle). :func:`encode` never emits references.

Leniency (as FFmpeg's and librtmp's readers are): an ECMA array's declared count is advisory,
the array is read up to its end marker; an ECMA array whose end marker is missing or cut short
*at the very end of the data* is accepted, because some encoders write ``onMetaData`` that way.

Error policy:

- :func:`decode` and :func:`decode_one` raise :class:`AMF0Error` (a ``RemoteProtocolError``)
  for any malformed input: truncation, unknown or unsupported markers (movie clip 0x04,
  record set 0x0E, the AMF3 switch 0x11), invalid UTF-8, a dangling reference, nesting deeper
  than :data:`MAX_DEPTH`. Nothing else escapes, whatever the bytes; a declared count never
  makes the decoder allocate more than the input can hold.
- :func:`encode` raises ``LocalProtocolError`` for values it cannot represent (an unsupported
  type, a non-``str`` or empty object key, a string or array too long for its length field,
  an int too large for a double, nesting deeper than :data:`MAX_DEPTH`, which includes cycles).
"""

from __future__ import annotations

import enum
import struct
from typing import Final, Literal, Union

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AMF0Error",
    "AMF0Date",
    "ECMAArray",
    "TypedObject",
    "UNDEFINED",
    "AMF0Value",
    "MAX_DEPTH",
    "encode",
    "decode",
    "decode_one",
]

#: How deeply complex values may nest, when decoding and when encoding.
MAX_DEPTH: Final = 64

# Type markers (AMF0 specification, section 2.1).
NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
MOVIECLIP: Final = 0x04
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
REFERENCE: Final = 0x07
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C
UNSUPPORTED: Final = 0x0D
RECORDSET: Final = 0x0E
XML_DOCUMENT: Final = 0x0F
TYPED_OBJECT: Final = 0x10
AVMPLUS: Final = 0x11

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DOUBLE = struct.Struct(">d")
_DATE = struct.Struct(">dh")

_NUMBER_PREFIX = bytes([NUMBER])
_TRUE = bytes([BOOLEAN, 1])
_FALSE = bytes([BOOLEAN, 0])
_NULL = bytes([NULL])
_UNDEFINED = bytes([UNDEFINED_MARKER])
_END = b"\x00\x00\x09"


class AMF0Error(RemoteProtocolError):
    """The peer sent bytes that are not valid AMF0 (or use a feature we do not support)."""


class _Undefined(enum.Enum):
    """Type of :data:`UNDEFINED`, the AMF0 ``undefined`` value (a falsy singleton)."""

    UNDEFINED = "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNDEFINED"


#: The AMF0 ``undefined`` value (distinct from ``None``, which is AMF0 ``null``).
UNDEFINED: Final = _Undefined.UNDEFINED


class ECMAArray(dict):  # type: ignore[type-arg]
    """An AMF0 ECMA array ("mixed array"): a ``dict`` that encodes with marker 0x08.

    ``onMetaData`` is usually sent as one. Keys are ``str``.
    """

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


@attrs.frozen
class AMF0Date:
    """An AMF0 date: milliseconds since the Unix epoch (UTC) and a timezone field.

    The specification says the timezone (a signed 16-bit count of minutes) is reserved and
    should be 0; it is kept as sent.
    """

    milliseconds: float
    timezone: int = 0


@attrs.frozen
class TypedObject:
    """An AMF0 typed object (0x10): an object that carries the name of its ActionScript class."""

    class_name: str
    fields: dict[str, AMF0Value]


AMF0Value = Union[
    bool,
    int,
    float,
    str,
    None,
    Literal[_Undefined.UNDEFINED],
    "dict[str, AMF0Value]",
    ECMAArray,
    "list[AMF0Value]",
    "tuple[AMF0Value, ...]",
    AMF0Date,
    TypedObject,
]


# --------------------------------------------------------------------------------------------
# Encoding


def encode(*values: object) -> bytes:
    """Return the AMF0 encodings of ``values``, concatenated.

    Raises ``LocalProtocolError`` for a value AMF0 cannot represent (see the module docstring).
    """
    out: list[bytes] = []
    for value in values:
        _encode_value(value, out, 0)
    return b"".join(out)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"AMF0 string is not encodable as UTF-8: {exc}") from None


def _encode_key(key: object, out: list[bytes]) -> None:
    if not isinstance(key, str):
        raise LocalProtocolError(f"AMF0 object keys must be str, not {type(key).__name__}")
    raw = _utf8(key)
    if not raw:
        raise LocalProtocolError("AMF0 object keys must not be empty (that is the end marker)")
    if len(raw) > 0xFFFF:
        raise LocalProtocolError(f"AMF0 object key of {len(raw)} bytes exceeds 65535")
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def _encode_properties(fields: dict[object, object], out: list[bytes], depth: int) -> None:
    for key, item in fields.items():
        _encode_key(key, out)
        _encode_value(item, out, depth)
    out.append(_END)


def _encode_value(value: object, out: list[bytes], depth: int) -> None:
    # bool before int: bool is a subclass of int.
    if value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, str):
        raw = _utf8(value)
        if len(raw) <= 0xFFFF:
            out.append(bytes([STRING]) + _U16.pack(len(raw)))
        elif len(raw) <= 0xFFFFFFFF:
            out.append(bytes([LONG_STRING]) + _U32.pack(len(raw)))
        else:
            raise LocalProtocolError(f"AMF0 string of {len(raw)} bytes is too long")
        out.append(raw)
    elif isinstance(value, (int, float)):
        try:
            out.append(_NUMBER_PREFIX + _DOUBLE.pack(value))
        except (OverflowError, struct.error):
            raise LocalProtocolError(f"AMF0 number {value!r} does not fit a double") from None
    elif value is None:
        out.append(_NULL)
    elif value is UNDEFINED:
        out.append(_UNDEFINED)
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise LocalProtocolError(f"AMF0 value nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, ECMAArray):
            if len(value) > 0xFFFFFFFF:
                raise LocalProtocolError("AMF0 ECMA array has too many entries")
            out.append(bytes([ECMA_ARRAY]) + _U32.pack(len(value)))
        else:
            out.append(bytes([OBJECT]))
        _encode_properties(value, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise LocalProtocolError(f"AMF0 value nests deeper than {MAX_DEPTH} levels")
        if len(value) > 0xFFFFFFFF:
            raise LocalProtocolError("AMF0 strict array has too many entries")
        out.append(bytes([STRICT_ARRAY]) + _U32.pack(len(value)))
        for item in value:
            _encode_value(item, out, depth + 1)
    elif isinstance(value, AMF0Date):
        try:
            out.append(bytes([DATE]) + _DATE.pack(value.milliseconds, value.timezone))
        except (OverflowError, struct.error):
            raise LocalProtocolError(f"AMF0 date {value!r} does not fit its fields") from None
    elif isinstance(value, TypedObject):
        if depth >= MAX_DEPTH:
            raise LocalProtocolError(f"AMF0 value nests deeper than {MAX_DEPTH} levels")
        raw = _utf8(value.class_name)
        if len(raw) > 0xFFFF:
            raise LocalProtocolError(f"AMF0 class name of {len(raw)} bytes exceeds 65535")
        out.append(bytes([TYPED_OBJECT]) + _U16.pack(len(raw)))
        out.append(raw)
        _encode_properties(value.fields, out, depth + 1)  # type: ignore[arg-type]
    else:
        raise LocalProtocolError(f"cannot encode a {type(value).__name__} as AMF0")


# --------------------------------------------------------------------------------------------
# Decoding


def decode(data: bytes | bytearray | memoryview) -> list[object]:
    """Decode every AMF0 value in ``data`` and return them in order.

    References resolve within the whole of ``data``. Raises :class:`AMF0Error` if ``data`` is
    malformed or ends inside a value.
    """
    decoder = _Decoder(data)
    values: list[object] = []
    end = decoder.end
    while decoder.pos < end:
        values.append(decoder.value(0))
    return values


def decode_one(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[object, int]:
    """Decode the one AMF0 value that starts at ``offset``; return it and the offset after it.

    References resolve only among the complex values of this one value. Raises
    :class:`AMF0Error` if the value is malformed or truncated (or ``offset`` is past the end).
    """
    decoder = _Decoder(data)
    if not 0 <= offset < decoder.end:
        raise AMF0Error(f"no AMF0 value at offset {offset} of {decoder.end} bytes")
    decoder.pos = offset
    value = decoder.value(0)
    return value, decoder.pos


class _Decoder:
    """One pass over a buffer: a position and the reference table."""

    __slots__ = ("data", "end", "pos", "refs")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data: bytes = data if isinstance(data, bytes) else bytes(data)
        self.end = len(self.data)
        self.pos = 0
        self.refs: list[object] = []

    def _need(self, size: int, what: str) -> int:
        """Return the current position after checking that ``size`` bytes follow it."""
        pos = self.pos
        if pos + size > self.end:
            raise AMF0Error(f"AMF0 data ends inside {what} (at byte {pos}, need {size})")
        return pos

    def _text(self, size: int, what: str) -> str:
        pos = self._need(size, what)
        self.pos = pos + size
        try:
            return self.data[pos : pos + size].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AMF0Error(f"AMF0 {what} is not valid UTF-8: {exc.reason}") from None

    def _short_text(self, what: str) -> str:
        pos = self._need(2, what)
        (size,) = _U16.unpack_from(self.data, pos)
        self.pos = pos + 2
        return self._text(size, what)

    def _long_text(self, what: str) -> str:
        pos = self._need(4, what)
        (size,) = _U32.unpack_from(self.data, pos)
        self.pos = pos + 4
        return self._text(size, what)

    def _properties(self, fields: dict[str, object], depth: int, lenient_end: bool) -> None:
        """Read ``key, value`` pairs into ``fields`` up to and including the end marker."""
        data = self.data
        end = self.end
        while True:
            pos = self.pos
            remaining = end - pos
            if remaining < 3 and lenient_end and data[pos:end].count(0) == remaining:
                # End marker missing or cut short at the end of the data (ECMA arrays only).
                self.pos = end
                return
            if remaining >= 3 and data[pos] == 0 and data[pos + 1] == 0:
                if data[pos + 2] != OBJECT_END:
                    raise AMF0Error(f"AMF0 empty property name not followed by end marker at {pos}")
                self.pos = pos + 3
                return
            key = self._short_text("property name")
            if not key:
                raise AMF0Error(f"AMF0 data ends inside object end marker at {pos}")
            fields[key] = self.value(depth)

    def value(self, depth: int) -> object:
        """Decode one value at the current position (``depth`` complex values enclose it)."""
        data = self.data
        pos = self.pos
        if pos >= self.end:
            raise AMF0Error(f"AMF0 data ends where a value should start (at byte {pos})")
        marker = data[pos]
        self.pos = pos + 1
        if marker == STRING:
            return self._short_text("string")
        if marker == NUMBER:
            pos = self._need(8, "number")
            self.pos = pos + 8
            return _DOUBLE.unpack_from(data, pos)[0]
        if marker == BOOLEAN:
            pos = self._need(1, "boolean")
            self.pos = pos + 1
            return data[pos] != 0
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER or marker == UNSUPPORTED:
            return UNDEFINED
        if marker in (OBJECT, ECMA_ARRAY, STRICT_ARRAY, TYPED_OBJECT):
            if depth >= MAX_DEPTH:
                raise AMF0Error(f"AMF0 value nests deeper than {MAX_DEPTH} levels")
            return self._complex(marker, depth + 1)
        if marker == REFERENCE:
            pos = self._need(2, "reference")
            self.pos = pos + 2
            (index,) = _U16.unpack_from(data, pos)
            if index >= len(self.refs):
                raise AMF0Error(f"AMF0 reference {index} points past the {len(self.refs)} complex values so far")
            return self.refs[index]
        if marker == DATE:
            pos = self._need(10, "date")
            self.pos = pos + 10
            milliseconds, timezone = _DATE.unpack_from(data, pos)
            return AMF0Date(milliseconds, timezone)
        if marker == LONG_STRING:
            return self._long_text("long string")
        if marker == XML_DOCUMENT:
            return self._long_text("XML document")
        if marker == AVMPLUS:
            raise AMF0Error(f"AMF3 values (AVM+ switch marker 0x11 at byte {pos}) are not supported")
        if marker == OBJECT_END:
            raise AMF0Error(f"AMF0 object end marker 0x09 where a value should start (byte {pos})")
        if marker == MOVIECLIP:
            raise AMF0Error(f"AMF0 movie clip marker 0x04 (reserved) is not supported (byte {pos})")
        if marker == RECORDSET:
            raise AMF0Error(f"AMF0 record set marker 0x0E (reserved) is not supported (byte {pos})")
        raise AMF0Error(f"unknown AMF0 type marker 0x{marker:02X} at byte {pos}")

    def _complex(self, marker: int, depth: int) -> object:
        if marker == OBJECT:
            obj: dict[str, object] = {}
            self.refs.append(obj)
            self._properties(obj, depth, lenient_end=False)
            return obj
        if marker == ECMA_ARRAY:
            # The count is advisory: read up to the end marker.
            self._need(4, "ECMA array count")
            self.pos += 4
            array = ECMAArray()
            self.refs.append(array)
            self._properties(array, depth, lenient_end=True)
            return array
        if marker == STRICT_ARRAY:
            pos = self._need(4, "strict array count")
            (count,) = _U32.unpack_from(self.data, pos)
            self.pos = pos + 4
            # Every value takes at least one byte: a larger count cannot be honest.
            if count > self.end - self.pos:
                raise AMF0Error(f"AMF0 strict array claims {count} values but only {self.end - self.pos} bytes follow")
            items: list[object] = []
            self.refs.append(items)
            for _ in range(count):
                items.append(self.value(depth))
            return items
        # TYPED_OBJECT
        class_name = self._short_text("typed object class name")
        fields: dict[str, object] = {}
        typed = TypedObject(class_name, fields)
        self.refs.append(typed)
        self._properties(fields, depth, lenient_end=False)
        return typed
