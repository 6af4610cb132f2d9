"""The sans-IO core of an LL-HLS viewer: answers in, the next requests out (no sockets, no trio).

A :class:`RenditionFollower` follows one media playlist the way hls.js does in
``lowLatencyMode``, as request targets (bytes) to send on one HTTP/1.1 keep-alive connection
and the answers to them, in order:

1. a plain reload of the playlist;
2. then, as one pipelined batch: the init segment (``EXT-X-MAP``, once), the parts the last
   playlist lists after the newest part fetched (at the start: only the newest listed part, the
   live edge), the blocking reload of the part after the newest listed one
   (``_HLS_msn``/``_HLS_part``, with ``_HLS_skip=YES`` when ``EXT-X-SERVER-CONTROL`` advertises
   ``CAN-SKIP-UNTIL``), and the part ``EXT-X-PRELOAD-HINT`` names (the next one, which the server
   answers once it exists), unless fetched already;
3. step 2 again with the playlist the blocking reload answered, until ``EXT-X-ENDLIST``.

Parts are known by their place, ``(media sequence number, index in the segment)``, counted
from ``EXT-X-MEDIA-SEQUENCE`` (plus ``EXT-X-SKIP:SKIPPED-SEGMENTS`` of a delta update) and the
``#EXTINF`` lines; a hint is the part after the last listed one. A **gap** is counted once for
each run of parts skipped between two parts fetched: the first part a playlist lists after the
newest one fetched is not the one after it (the parts between left the playlist before they
were fetched: the viewer fell behind), or a listed part is answered with a status other than 200
(it left the window while its request waited); a stream whose sequence numbers go back (a new
publisher) counts one and starts again at the live edge. Whether part ``(m, i)`` was the last of
segment ``m`` is known from a playlist that lists ``m`` complete with its parts or, for a viewer
that was so far behind that ``m`` lost its parts from the playlist, from ``m``'s ``#EXTINF``
duration: what is left of it after the start of part ``i`` (the sum of the ``DURATION`` of parts
``0..i-1``, as the playlist that listed or hinted part ``i`` gave them) is at most one
``PART-TARGET`` (RFC 8216bis: a part other than a segment's last lasts at least 85 % of it, a
part at most all of it).

:func:`parse_media_playlist` reads what this needs with byte searches (no regular expression
per line, no decoding): a load generator's follower parses one playlist per part.

Bounds: a batch asks for at most :data:`MAX_BATCH_PARTS` listed parts (a viewer further behind
counts a gap and jumps to the live edge); the follower keeps the part counts of at most the
segments of one playlist. Bodies are as large as the driver allows.

Error policy: :meth:`RenditionFollower.receive` raises
:class:`~arcly_trio.core.errors.RemoteProtocolError` for a playlist answered with a status other
than 200 or without ``EXT-X-MEDIA-SEQUENCE``, and for an init segment answered with a status
other than 200; the driver counts an error and starts the rendition again (:meth:`start`, on a
new connection). A hinted part answered with a status other than 200 is not a gap: the next
playlist lists it and it is fetched then. Nothing else is raised, whatever the bytes.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import attrs

from arcly_trio.core.errors import RemoteProtocolError

__all__ = [
    "MAX_BATCH_PARTS",
    "FollowerCounts",
    "MediaPlaylist",
    "RenditionFollower",
    "parse_media_playlist",
    "part_uri",
    "rendition_targets",
    "resolve",
]

MAX_BATCH_PARTS: Final = 64
"""The most listed parts one batch asks for; further behind, a viewer jumps to the live edge."""

_PLAYLIST: Final = 0
_INIT: Final = 1
_PART: Final = 2
_HINT: Final = 3


@attrs.define(slots=True)
class FollowerCounts:
    """What followers fetched (shared by as many as count together)."""

    playlists: int = 0
    parts: int = 0
    bytes: int = 0
    gaps: int = 0
    errors: int = 0


class MediaPlaylist(NamedTuple):
    """What a follower needs of a media playlist (a named tuple: one is made per reload, and
    a tuple is the cheapest immutable record to make)."""

    open_msn: int
    """The media sequence number of the segment after the last complete one listed (the one
    whose parts are being written)."""
    open_parts: int
    """How many parts of that segment the playlist lists."""
    parts: tuple[tuple[int, int, bytes], ...]
    """Every ``EXT-X-PART``: ``(msn, index, the tag's line)``, in order (:func:`part_uri`)."""
    first_msn: int
    """The media sequence number of the first segment listed (after the skipped ones)."""
    closed: tuple[tuple[int, int], ...]
    """``(msn, parts)`` of each complete segment listed with its parts."""
    hint: bytes | None
    """The ``EXT-X-PRELOAD-HINT`` part's URI: part ``(open_msn, open_parts)``."""
    init: bytes | None
    """The first ``EXT-X-MAP`` URI."""
    part_target: float | None
    """``EXT-X-PART-INF:PART-TARGET``, if readable."""
    can_skip: bool
    """``EXT-X-SERVER-CONTROL`` advertises ``CAN-SKIP-UNTIL`` (delta updates)."""
    ended: bool
    body: bytes
    """The playlist (read again only by :meth:`segment_duration`)."""

    def segment_duration(self, msn: int) -> float | None:
        """The ``#EXTINF`` duration of segment ``msn``, if listed (a search of the body: rare)."""
        at = -1
        for _ in range(msn - self.first_msn + 1):
            at = _tag(self.body, b"#EXTINF", at + 1)
            if at < 0:
                return None
        return _seconds(_line(self.body, at), b"#EXTINF:") if at >= 0 else None


def _attribute(line: bytes, name: bytes) -> bytes | None:
    """The quoted attribute ``name`` (``b'URI="'``) of a tag line."""
    at = line.find(name)
    if at < 0:
        return None
    start = at + len(name)
    end = line.find(b'"', start)
    return line[start:] if end < 0 else line[start:end]


def _decimal(line: bytes, prefix: bytes) -> int | None:
    text = line[len(prefix) :].strip()
    return int(text) if text.isdigit() and len(text) <= 18 else None


def _seconds(line: bytes, prefix: bytes) -> float | None:
    """The decimal after ``prefix`` in a tag line (``DURATION=``, ``#EXTINF:``), if readable."""
    at = line.find(prefix)
    if at < 0:
        return None
    start = at + len(prefix)
    end = start
    while end < len(line) and line[end] in b"0123456789.":
        end += 1
    try:
        return float(line[start:end]) if end - start <= 18 else None
    except ValueError:
        return None


def _tag(body: bytes, tag: bytes, start: int = 0) -> int:
    """Where the first line from ``start`` on that starts with ``tag`` starts (``-1``: none)."""
    if body.startswith(tag, start):
        return start
    at = body.find(b"\n" + tag, start)
    return at + 1 if at >= 0 else -1


def _line(body: bytes, at: int) -> bytes:
    end = body.find(b"\n", at)
    return body[at:] if end < 0 else body[at:end]


def parse_media_playlist(body: bytes, since: int | None = None) -> MediaPlaylist:
    """The :class:`MediaPlaylist` of an LL-HLS media playlist (``RemoteProtocolError`` when it has
    no ``EXT-X-MEDIA-SEQUENCE``); with ``since``, only the parts (and ``closed``) of segments from
    media sequence number ``since`` on. Each tag is found with one byte search (the first line
    that starts with it; ``EXT-X-SKIP`` before the first part, ``EXT-X-ENDLIST`` after it); only
    the lines of the parts wanted are read one by one."""
    at = _tag(body, b"#EXT-X-MEDIA-SEQUENCE:")
    sequence = None if at < 0 else _decimal(_line(body, at), b"#EXT-X-MEDIA-SEQUENCE:")
    if sequence is None:
        raise RemoteProtocolError("media playlist without #EXT-X-MEDIA-SEQUENCE")
    region = _tag(body, b"#EXT-X-PART:")
    with_parts = region >= 0
    if not with_parts:
        region = len(body)
    skipped = 0
    at = body.find(b"\n#EXT-X-SKIP:", 0, region)  # before the segments (and their parts)
    if at >= 0:
        digits = _line(body, at + 1).partition(b"SKIPPED-SEGMENTS=")[2].partition(b",")[0].strip()
        skipped = int(digits) if digits.isdigit() and len(digits) <= 9 else 0
    first = sequence + skipped
    segments = body.count(b"\n#EXTINF", 0, region) + body.startswith(b"#EXTINF")
    while since is not None and first + segments < since:  # skip whole segments, by search
        at = _tag(body, b"#EXTINF", region)
        if at < 0:
            break
        segments += 1
        region = at + 1
    index = 0
    parts: list[tuple[int, int, bytes]] = []
    closed: list[tuple[int, int]] = []
    floor = -1 if since is None else since
    for line in body[region:].split(b"\n"):
        if line.startswith(b"#EXT-X-PART:"):
            if first + segments >= floor:
                parts.append((first + segments, index, line))
            index += 1
        elif line.startswith(b"#EXTINF"):
            if index and first + segments >= floor:
                closed.append((first + segments, index))
            segments += 1
            index = 0
    hint = None
    at = body.rfind(b"\n#EXT-X-PRELOAD-HINT:TYPE=PART,")  # where a server puts it: near the end
    if at >= 0:
        hint = _attribute(_line(body, at + 1), b'URI="')
        at = -1
    else:
        at = _tag(body, b"#EXT-X-PRELOAD-HINT:")
    while at >= 0 and hint is None:
        line = _line(body, at)
        hint = _attribute(line, b'URI="') if b"TYPE=PART" in line else None
        at = _tag(body, b"#EXT-X-PRELOAD-HINT:", at + 1)
    at = _tag(body, b"#EXT-X-MAP:")
    init = None if at < 0 else _attribute(_line(body, at), b'URI="')
    at = _tag(body, b"#EXT-X-PART-INF:")
    part_target = None if at < 0 else _seconds(_line(body, at), b"PART-TARGET=")
    at = _tag(body, b"#EXT-X-SERVER-CONTROL:")
    return MediaPlaylist(
        open_msn=first + segments,
        open_parts=index,
        parts=tuple(parts),
        first_msn=first,
        closed=tuple(closed),
        hint=hint,
        init=init,
        part_target=part_target,
        can_skip=at >= 0 and b"CAN-SKIP-UNTIL=" in _line(body, at),
        ended=_tag(body, b"#EXT-X-ENDLIST", region if with_parts else 0) >= 0,  # after the parts
        body=body,
    )


def part_uri(line: bytes) -> bytes:
    """The URI of an ``EXT-X-PART`` line (``b""`` if it has none)."""
    return _attribute(line, b'URI="') or b""


def resolve(base: bytes, uri: bytes) -> bytes:
    """``uri`` (relative to the playlist whose request target is ``base``) as a request target."""
    if uri.startswith(b"/"):
        return uri
    return base.partition(b"?")[0].rpartition(b"/")[0] + b"/" + uri


def rendition_targets(target: bytes, body: bytes) -> list[bytes]:
    """The media playlists a multivariant playlist (requested as ``target``) names: the first
    variant stream, then every ``EXT-X-MEDIA`` with a URI (the audio rendition)."""
    variant: list[bytes] = []
    media: list[bytes] = []
    for line in body.split(b"\n"):
        line = line.strip()
        if line.startswith(b"#EXT-X-MEDIA:"):
            uri = _attribute(line, b'URI="')
            if uri:
                media.append(resolve(target, uri))
        elif line and not line.startswith(b"#") and not variant:
            variant.append(resolve(target, line))
    return variant + media


class RenditionFollower:
    """One viewer's follower of one media playlist (see the module docstring).

    The driver sends the targets :meth:`start` returns, feeds each answer, in order, to
    :meth:`receive`, and sends what it returns once the batch is answered (an empty list until
    then); ``pending`` is how many answers the batch still waits for. Counts go to ``counts``.
    """

    __slots__ = ("counts", "ended", "_target", "_kinds", "_keys", "_playlist", "_newest", "_newest_start", "_closed",
                 "_init_done", "_lost", "_last_start")  # fmt: skip

    def __init__(self, target: bytes, counts: FollowerCounts | None = None) -> None:
        self.counts = counts if counts is not None else FollowerCounts()
        self.ended = False
        self._target = target
        self._kinds: list[int] = []
        self._keys: list[tuple[int, int]] = []
        self._playlist: MediaPlaylist | None = None
        self._newest: tuple[int, int] | None = None
        self._newest_start: MediaPlaylist | None = None
        """The playlist that listed or hinted the newest part fetched (where it starts in its
        segment is read from it only when needed)."""
        self._last_start: tuple[tuple[int, int], MediaPlaylist | None] = ((-1, -1), None)
        """The last part the batch asks for, and the playlist that named it."""
        self._closed: dict[int, int] = {}
        self._init_done = False
        self._lost = False
        """The last thing that happened to the parts was a skip (one gap per run of them)."""

    @property
    def pending(self) -> int:
        """Answers the batch sent still waits for."""
        return len(self._kinds)

    def start(self) -> list[bytes]:
        """Start (again, on a new connection): the first batch, a plain reload."""
        self._kinds = [_PLAYLIST]
        self._keys = [(0, 0)]
        self._playlist = None
        self._newest = None
        self._newest_start = None
        self._closed.clear()
        self._init_done = False
        self._lost = False
        self.ended = False
        return [self._target]

    def receive(self, status: int, body: bytes, length: int | None = None) -> list[bytes]:
        """The answer to the oldest request of the batch: its ``status`` and ``body`` (a driver that
        does not keep part bodies passes ``b""`` and their ``length``); the next batch once this
        one is answered, else ``[]``."""
        kind = self._kinds.pop(0)
        key = self._keys.pop(0)
        size = len(body) if length is None else length
        counts = self.counts
        if kind == _PLAYLIST:
            if status != 200:
                raise RemoteProtocolError(f"media playlist answered {status}")
            counts.playlists += 1
            self._playlist = parse_media_playlist(body, None if self._newest is None else self._newest[0])
        elif kind == _INIT:
            if status != 200:
                raise RemoteProtocolError(f"init segment answered {status}")
            counts.bytes += size
            self._init_done = True
        elif status == 200:
            counts.parts += 1
            counts.bytes += size
            self._lost = False
            if self._newest is None or key > self._newest:
                self._newest = key
                self._newest_start = self._last_start[1] if self._last_start[0] == key else None
        elif kind == _PART:
            self._skip()  # listed, gone before its turn
            if self._newest is None or key > self._newest:
                self._newest = key
                self._newest_start = self._last_start[1] if self._last_start[0] == key else None
        if self._kinds:
            return []
        return self._next_batch()

    def next_is_playlist(self) -> bool:
        """Whether the next answer is a playlist (a driver keeps only those bodies)."""
        return bool(self._kinds) and self._kinds[0] == _PLAYLIST

    def _skip(self) -> None:
        if not self._lost:
            self.counts.gaps += 1
            self._lost = True

    def _follows(self, newest: tuple[int, int], key: tuple[int, int], playlist: MediaPlaylist) -> bool:
        """Whether part ``key`` is the one after ``newest``."""
        msn, index = newest
        if key == (msn, index + 1):
            return True
        if key != (msn + 1, 0):
            return False
        count = self._closed.get(msn)
        if count is not None:
            return index + 1 == count
        named, target = self._newest_start, playlist.part_target  # segment ``msn`` without its parts
        start = None if named is None else _start_of(named, msn, index)
        if start is None or target is None or msn < playlist.first_msn:
            return False
        duration = playlist.segment_duration(msn)
        return duration is not None and duration - start <= target + 0.005

    def _next_batch(self) -> list[bytes]:
        playlist = self._playlist
        if playlist is None:  # never reached: every batch holds a playlist
            return self.start()
        if playlist.ended:
            self.ended = True
            return []
        closed = self._closed
        for msn, count in playlist.closed:
            closed[msn] = count
        newest = self._newest
        if newest is not None and newest[0] > playlist.open_msn:  # numbers went back: a new stream
            self._skip()
            newest = self._newest = self._newest_end = None
            closed.clear()
            for msn, count in playlist.closed:
                closed[msn] = count
        if len(closed) > 2 * len(playlist.closed) + 8:
            keep = {msn for msn, _ in playlist.closed}
            for msn in [msn for msn in closed if msn not in keep]:
                del closed[msn]
        targets: list[bytes] = []
        kinds: list[int] = []
        keys: list[tuple[int, int]] = []
        base = self._target
        if not self._init_done and playlist.init is not None:
            targets.append(resolve(base, playlist.init))
            kinds.append(_INIT)
            keys.append((0, 0))
        listed = playlist.parts
        if newest is None:
            wanted = listed[-1:]
        else:
            wanted = tuple(part for part in listed if (part[0], part[1]) > newest)
            if len(wanted) > MAX_BATCH_PARTS:
                self._skip()
                wanted = wanted[-1:]
            elif wanted and not self._follows(newest, (wanted[0][0], wanted[0][1]), playlist):
                self._skip()
        for msn, index, line in wanted:
            targets.append(resolve(base, part_uri(line)))
            kinds.append(_PART)
            keys.append((msn, index))
        next_key = (playlist.open_msn, playlist.open_parts)
        joiner = b"&" if b"?" in base else b"?"
        reload = b"%s%s_HLS_msn=%d&_HLS_part=%d" % (base, joiner, next_key[0], next_key[1])
        if playlist.can_skip:
            reload += b"&_HLS_skip=YES"
        targets.append(reload)
        kinds.append(_PLAYLIST)
        keys.append(next_key)
        if playlist.hint is not None and (newest is None or next_key > newest):
            targets.append(resolve(base, playlist.hint))
            kinds.append(_HINT)
            keys.append(next_key)
            last = next_key
        else:
            last = (wanted[-1][0], wanted[-1][1]) if wanted else (-1, -1)
        self._last_start = (last, playlist)
        self._kinds = kinds
        self._keys = keys
        return targets


def _start_of(playlist: MediaPlaylist, msn: int, index: int) -> float | None:
    """Where part ``(msn, index)`` starts in its segment: the sum of the ``DURATION`` of the
    parts before it the playlist lists (``None`` if they are not all there)."""
    start = 0.0
    count = 0
    for part_msn, part_index, line in playlist.parts:
        if part_msn == msn and part_index < index:
            duration = _seconds(line, b"DURATION=")
            if duration is None:
                return None
            start += duration
            count += 1
    return start if count == index else None
