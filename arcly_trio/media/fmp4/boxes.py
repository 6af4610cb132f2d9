"""ISO BMFF box writing: boxes, full boxes and MPEG-4 descriptors (sans-IO).

Error policy: the callers build the parts; nothing here validates or raises (a ``struct.error``
would be our own bug).
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["U32", "box", "full_box", "descriptor"]

#: The largest unsigned 32-bit value (sequence numbers, track IDs).
U32: Final = 0xFFFFFFFF


def box(kind: bytes, *parts: bytes) -> bytes:
    """A box of type ``kind`` whose body is ``parts`` joined."""
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    """A FullBox: a box whose body starts with the version and the 24-bit flags."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def descriptor(tag: int, *parts: bytes) -> bytes:
    """An MPEG-4 descriptor (ISO/IEC 14496-1, 8.3.3): tag, expandable size, body."""
    body = b"".join(parts)
    size = len(body)
    length = [size & 0x7F]
    size >>= 7
    while size:
        length.append(0x80 | (size & 0x7F))
        size >>= 7
    return bytes((tag, *reversed(length))) + body
