"""The exceptions of the codec parsers.

Error policy: this module defines them and raises nothing. Every parser in :mod:`.codecs`
raises :class:`CodecError` (a :class:`~arcly_trio.core.errors.RemoteProtocolError`) for bytes
from a peer that do not parse, and nothing else on arbitrary bytes.
"""

from __future__ import annotations

from arcly_trio.core.errors import RemoteProtocolError

__all__ = ["CodecError", "UnsupportedCodec"]


class CodecError(RemoteProtocolError):
    """Codec bytes from the peer are malformed (a config record, a parameter set, an access
    unit or an AAC config that cannot be parsed)."""


class UnsupportedCodec(CodecError):
    """A codec (or a codec string, or a record version) this package does not handle."""
