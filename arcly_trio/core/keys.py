"""Names of streams and what a client presents to get at them.

Names are checked where they are made: a :class:`StreamKey` can only hold an application and a
stream name that :func:`check_name` accepts, so a name a peer sent reaches no log line, file path
or storage key unless it is short and made of safe characters.

Error policy: :func:`check_name` (and so ``StreamKey(...)``) raises
:class:`~.errors.InvalidStreamName`, whose message shows the name escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from arcly_trio.core.errors import InvalidStreamName

__all__ = ["StreamKey", "Credentials", "check_name", "MAX_NAME_LENGTH", "NAME_PUNCTUATION"]

#: The longest application or stream name, in characters.
MAX_NAME_LENGTH: Final = 128
#: The characters a name may hold besides letters and digits (Unicode ones included).
NAME_PUNCTUATION: Final = frozenset("_-.~@+=")


def check_name(name: str, what: str = "stream name") -> str:
    """Return ``name`` if it is a valid application or stream name, else raise.

    Valid: 1 to :data:`MAX_NAME_LENGTH` characters, each a letter or digit (any script) or one
    of ``_ - . ~ @ + =``, not starting with ``.``. So no slash, space, control character, quote
    or ``..``: a valid name is safe in a log line, a URL path segment and a file name.
    """
    if not isinstance(name, str) or not name:
        raise InvalidStreamName(str(name), f"an empty {what}")
    article = "an" if what[:1] in ("a", "e", "i", "o", "u") else "a"
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidStreamName(name, f"{article} {what} is at most {MAX_NAME_LENGTH} characters, not {len(name)}")
    if name[0] == ".":
        raise InvalidStreamName(name, f"{article} {what} may not start with '.'")
    for char in name:
        if not (char.isalnum() or char in NAME_PUNCTUATION):
            raise InvalidStreamName(name, f"{article} {what} may hold only letters, digits and _-.~@+= (not {char!r})")
    return name


def _app_name(instance: Any, attribute: Any, value: str) -> None:
    check_name(value, "application name")


def _stream_name(instance: Any, attribute: Any, value: str) -> None:
    check_name(value, "stream name")


@attrs.frozen(slots=True)
class StreamKey:
    """The address of a stream: an application name and a stream name (``live/demo``).

    Both names are checked (:func:`check_name`): ``StreamKey("live", "a b")`` raises
    :class:`~.errors.InvalidStreamName`.
    """

    app: str = attrs.field(validator=_app_name)
    name: str = attrs.field(validator=_stream_name)

    @classmethod
    def parse(cls, text: str) -> StreamKey:
        """``"app/name"`` -> ``StreamKey("app", "name")``; ValueError when there is no ``/``,
        :class:`~.errors.InvalidStreamName` for a name :func:`check_name` refuses."""
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
    authenticator can apply different rules per protocol. ``bearer`` is the token of an HTTP
    ``Authorization: Bearer`` header (a JWT, for instance). ``client_id`` is the id the engine
    gives each publish and play (the session id of ``/api/sessions``, sent to HTTP hooks); the
    engine fills it in, a caller leaves it empty.
    """

    token: str | None = None
    peer: tuple[str, int] | None = None
    query: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    protocol: str = ""
    bearer: str | None = None
    client_id: str = ""
