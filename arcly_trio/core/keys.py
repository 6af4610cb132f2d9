"""Names of streams and what a client presents to get at them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

__all__ = ["StreamKey", "Credentials"]


@attrs.frozen(slots=True)
class StreamKey:
    """The address of a stream: an application name and a stream name (``live/demo``)."""

    app: str
    name: str

    @classmethod
    def parse(cls, text: str) -> StreamKey:
        """``"app/name"`` -> ``StreamKey("app", "name")``; ValueError when there is no ``/``."""
        app, sep, name = text.partition("/")
        if not sep or not app or not name:
            raise ValueError(f"stream key {text!r} is not of the form app/name")
        return cls(app, name)

    def __str__(self) -> str:
        return f"{self.app}/{self.name}"


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen(slots=True)
class Credentials:
    """What a publisher or player presented: a token, its address, its URL query parameters.

    ``protocol`` names the protocol the client came in on (``"rtmp"``, ``"http-flv"``...), so an
    authenticator can apply different rules per protocol.
    """

    token: str | None = None
    peer: tuple[str, int] | None = None
    query: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    protocol: str = ""
