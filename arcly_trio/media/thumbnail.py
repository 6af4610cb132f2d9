"""Still pictures of video: one keyframe decoded with PyAV, scaled, encoded as a JPEG (blocking:
run it in a thread).

What it is for: the thumbnails of live streams and of recordings
(:mod:`arcly_trio.services.thumbnails`, served as ``/{app}/{stream}/thumbnail.jpg`` and
``playback.jpg``). Nothing here imports trio or keeps state; every function blocks on FFmpeg
work, so the service calls them with ``trio.to_thread.run_sync``.

How it works:

* :func:`keyframe_jpeg` decodes one keyframe: a decoder for the codec (``h264``, ``hevc``,
  ``av1`` with libdav1d, ``vp9``) is set up with the track's config record as its extradata
  (``avcC``, ``hvcC``, ``av1C``: the payload of the stream's config frame, or a recording's
  sample entry), fed the keyframe's payload as one packet and flushed; the picture is scaled to
  the asked width (the height follows the display aspect ratio, both even, at most
  :data:`MAX_HEIGHT`) and encoded by FFmpeg's ``mjpeg`` encoder (full-range 4:2:0).
* :func:`recorded_keyframe` finds the keyframe at or before a moment of a recorded file
  (fragmented MP4, MPEG-TS, FLV: anything FFmpeg demuxes): open, seek backwards on the video
  stream, read packets up to the moment and keep the last keyframe; a seek that lands past it
  (MPEG-TS has no index) is tried again from further back. It decodes nothing: its result (codec, extradata, payload,
  time) goes to :func:`keyframe_jpeg`, and its time lets a caller share one decode between
  every request that lands on the same keyframe.

Attacker's view: the keyframe is a publisher's bytes (or a file made of them). A payload over
:data:`MAX_PAYLOAD` is not decoded; a decoded picture larger than :data:`MAX_SOURCE_PIXELS` is
not scaled; the decoder runs on one thread; the output size is bounded (:data:`MIN_WIDTH` ..
:data:`MAX_WIDTH` wide, at most :data:`MAX_HEIGHT` high), so one call costs one bounded decode
and one bounded encode. A file is read up to :data:`MAX_PACKETS` packets past the seek point.
FFmpeg's decoders and demuxers are the parsers.

Error policy: every failure to make a picture raises :class:`NoPicture` (a subclass of the
project's :class:`~arcly_trio.core.errors.ArclyError`) with a short reason: no video, an
unknown codec, a payload FFmpeg refuses, nothing decoded, a file that cannot be read. A width
outside the bounds is a ``ValueError`` (the caller's mistake: it checks with
:func:`check_width` first). Nothing else escapes but a programming error.
"""

from __future__ import annotations

import fractions
import os
from typing import Any, Final

import attrs

from arcly_trio.core.errors import ArclyError

__all__ = [
    "DEFAULT_WIDTH",
    "MAX_HEIGHT",
    "MAX_PACKETS",
    "MAX_PAYLOAD",
    "MAX_SOURCE_PIXELS",
    "MAX_WIDTH",
    "MIN_WIDTH",
    "NoPicture",
    "RecordedKeyframe",
    "Thumbnail",
    "check_width",
    "keyframe_jpeg",
    "recorded_keyframe",
    "scaled_size",
]

#: The narrowest thumbnail, in pixels.
MIN_WIDTH: Final = 16
#: The widest thumbnail, in pixels.
MAX_WIDTH: Final = 1920
#: The width when none is asked for.
DEFAULT_WIDTH: Final = 320
#: The tallest thumbnail, in pixels (a very tall picture is narrowed to fit).
MAX_HEIGHT: Final = 1920
#: The largest keyframe payload decoded, in bytes.
MAX_PAYLOAD: Final = 16 * 1024 * 1024
#: The largest decoded picture scaled (8K UHD).
MAX_SOURCE_PIXELS: Final = 7680 * 4320
#: Packets read after a seek, at most, looking for a keyframe of the video stream.
MAX_PACKETS: Final = 2000
_SEEK_BACK: Final = (0.0, 2.0, 10.0, 60.0)
"""Seconds before the moment to seek to, in turn, until a keyframe at or before it is read (a
demuxer without an index, MPEG-TS, may land after the keyframe asked for)."""
_EPSILON: Final = 0.001

_DECODERS: Final = {"h264": ("h264",), "hevc": ("hevc",), "av1": ("libdav1d", "av1"), "vp9": ("vp9", "libvpx-vp9")}
"""The FFmpeg decoders to try for each of the project's video codec names, in order."""
_CODEC_NAMES: Final = {
    "h264": "h264",
    "hevc": "hevc",
    "av1": "av1",
    "libdav1d": "av1",
    "vp9": "vp9",
    "libvpx-vp9": "vp9",
}
"""FFmpeg's decoder names back to the project's codec names."""
_JPEG_QUALITY: Final = ("2", "6")
"""``qmin``, ``qmax`` of the JPEG encoder (lower is better; 2..6 is visually clean)."""


class NoPicture(ArclyError):
    """No picture could be made (see the module docstring's error policy).

    ``status`` is the HTTP status that fits the reason (as h11's ``error_status_hint``): ``422``
    for a keyframe that does not decode (the default); the thumbnail service raises it with
    ``409`` (no video, a codec without thumbnails), ``404`` (nothing recorded there) and ``503``
    (no keyframe yet, or busy: retry)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class Thumbnail:
    """A JPEG of ``width`` x ``height`` pixels, made from a ``source_width`` x ``source_height``
    picture."""

    jpeg: bytes
    width: int
    height: int
    source_width: int
    source_height: int


@attrs.frozen
class RecordedKeyframe:
    """A keyframe found in a file: what :func:`keyframe_jpeg` needs, and where it is.

    ``time`` is its presentation time in seconds after the file's first video sample."""

    codec: str
    extradata: bytes | None
    payload: bytes
    time: float


def check_width(width: int) -> int:
    """``width`` if it is within :data:`MIN_WIDTH` .. :data:`MAX_WIDTH`, else ``ValueError``."""
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"width must be from {MIN_WIDTH} to {MAX_WIDTH} pixels, not {width}")
    return width


def scaled_size(
    source_width: int, source_height: int, width: int, aspect: fractions.Fraction | None = None
) -> tuple[int, int]:
    """The size of a thumbnail ``width`` pixels wide of a ``source_width`` x ``source_height``
    picture whose pixels have the ``aspect`` ratio (``None``: square): the height follows the
    display aspect ratio; both are even (4:2:0), at least 2; a picture that would be taller than
    :data:`MAX_HEIGHT` is made narrower instead."""
    check_width(width)
    if source_width <= 0 or source_height <= 0:
        raise NoPicture(f"the picture has no size ({source_width}x{source_height})")
    display = fractions.Fraction(source_width, source_height)
    if aspect is not None and aspect > 0:
        display *= aspect
    height = width / display
    if height > MAX_HEIGHT:
        height = MAX_HEIGHT
        width = max(MIN_WIDTH, round(MAX_HEIGHT * display))
    return max(2, round(width / 2) * 2), max(2, round(height / 2) * 2)


def _decoder(codec: str, extradata: bytes | None) -> Any:
    import av

    names = _DECODERS.get(codec)
    if names is None:
        raise NoPicture(f"no thumbnails of {codec[:20]!r} video (h264, hevc, av1 and vp9 only)")
    for name in names:
        try:
            context = av.CodecContext.create(name, "r")
        except (av.error.FFmpegError, ValueError):  # this FFmpeg build lacks it: try the next
            continue
        context.thread_count = 1
        if extradata:
            context.extradata = extradata
        return context
    raise NoPicture(f"this FFmpeg build has no {codec} decoder")


def _encode_jpeg(picture: Any, width: int, height: int) -> bytes:
    import av

    scaled = picture.reformat(width=width, height=height, format="yuvj420p")
    scaled.pts = 0
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = fractions.Fraction(1, 25)
    encoder.options = {"qmin": _JPEG_QUALITY[0], "qmax": _JPEG_QUALITY[1]}
    packets = encoder.encode(scaled) + encoder.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def keyframe_jpeg(codec: str, extradata: bytes | None, payload: bytes, width: int) -> Thumbnail:
    """A JPEG ``width`` pixels wide of the keyframe ``payload`` of ``codec`` (the project's
    name: ``h264``, ``hevc``, ``av1``, ``vp9``), its decoder set up with ``extradata`` (the
    track's config record; ``None`` for VP9). Blocks; :class:`NoPicture` when no picture comes
    out (see the module docstring)."""
    import av

    check_width(width)
    if not payload:
        raise NoPicture("the keyframe is empty")
    if len(payload) > MAX_PAYLOAD:
        raise NoPicture(f"the keyframe is over {MAX_PAYLOAD} bytes")
    decoder = _decoder(codec, extradata)
    try:
        pictures = decoder.decode(av.Packet(payload))
        if not pictures:
            pictures = decoder.decode(None)
    except (av.error.FFmpegError, ValueError) as exc:
        raise NoPicture(f"the {codec} keyframe does not decode ({type(exc).__name__})") from None
    if not pictures:
        raise NoPicture(f"the {codec} keyframe decoded to no picture")
    picture = pictures[0]
    source = (picture.width, picture.height)
    if source[0] * source[1] > MAX_SOURCE_PIXELS:
        raise NoPicture(f"the picture is too large ({source[0]}x{source[1]})")
    aspect = getattr(picture, "sample_aspect_ratio", None)
    out_width, out_height = scaled_size(*source, width, aspect if isinstance(aspect, fractions.Fraction) else None)
    try:
        jpeg = _encode_jpeg(picture, out_width, out_height)
    except (av.error.FFmpegError, ValueError) as exc:
        raise NoPicture(f"the picture does not encode as JPEG ({type(exc).__name__})") from None
    if not jpeg:
        raise NoPicture("the JPEG encoder gave nothing")
    return Thumbnail(jpeg, out_width, out_height, *source)


def recorded_keyframe(path: str | os.PathLike[str], offset: float) -> RecordedKeyframe:
    """The keyframe of the file at ``path`` at or before ``offset`` seconds after its first
    video sample (the first keyframe when ``offset`` is before it). Reads, decodes nothing;
    :class:`NoPicture` for a file without video or that cannot be read."""

    where = os.fspath(path)
    found: RecordedKeyframe | None = None
    after: RecordedKeyframe | None = None
    tries = [back for back in _SEEK_BACK if offset - back > 0]
    for back in (*tries, None):  # None: from the beginning, without a seek (bounded by MAX_PACKETS)
        found, first = _scan(where, offset, back)
        if found is not None:
            return found
        after = after or first
    if after is not None:  # the moment is before the first keyframe: the first one
        return after
    raise NoPicture("no keyframe found in the recording at that time")


def _scan(path: str, offset: float, back: float | None) -> tuple[RecordedKeyframe | None, RecordedKeyframe | None]:
    """Open ``path``, seek ``back`` seconds before ``offset`` (``None``: read from the
    beginning) and read up to ``offset``: the last keyframe at or before it, and the first one
    after it if none was."""
    import av

    try:
        container = av.open(path, "r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise NoPicture(f"the recording cannot be read ({type(exc).__name__})") from None
    try:
        videos = container.streams.video
        if not videos:
            raise NoPicture("the recording has no video")
        stream = videos[0]
        context = stream.codec_context
        codec = _CODEC_NAMES.get(context.name)
        if codec is None:
            raise NoPicture(f"no thumbnails of {context.name[:20]!r} video (h264, hevc, av1 and vp9 only)")
        time_base = stream.time_base or fractions.Fraction(1, 90000)
        start = stream.start_time or 0
        extradata = bytes(context.extradata) if context.extradata else None
        if back is not None:
            target = max(0.0, offset - back)
            container.seek(start + int(target / time_base), stream=stream, backward=True, any_frame=False)
        best: RecordedKeyframe | None = None
        for count, packet in enumerate(container.demux(stream)):
            if count >= MAX_PACKETS or packet.pts is None:
                break
            if not packet.size or not packet.is_keyframe:
                order = packet.dts if packet.dts is not None else packet.pts
                if float((order - start) * time_base) > offset + _EPSILON:
                    break
                continue
            keyframe = RecordedKeyframe(codec, extradata, bytes(packet), float((packet.pts - start) * time_base))
            if keyframe.time > offset + _EPSILON:
                return best, (keyframe if best is None else None)
            best = keyframe
        return best, None
    except av.error.FFmpegError as exc:
        raise NoPicture(f"the recording cannot be read ({type(exc).__name__})") from None
    finally:
        container.close()
