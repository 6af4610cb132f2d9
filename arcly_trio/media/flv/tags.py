"""FLV tag bodies: the payload format of RTMP audio, video and data messages, and what reading
and writing it share.

FLV is the payload format of RTMP audio (8), video (9) and script data (18) messages, and of
each tag's body in an FLV stream (the container is :mod:`.container`). Reading a tag body into
frames is :mod:`.read`'s (:func:`~.read.parse_video`, :func:`~.read.parse_audio`,
:func:`~.read.parse_data`...), writing frames into tag bodies :mod:`.write`'s
(:func:`~.write.video_body`, :func:`~.write.audio_body`, :func:`~.write.data_body`,
:func:`~.write.tag_body`, :func:`~.write.frame_body`); both are sans-IO. This module holds what
they share: the tag types, the size limits, the errors, the codec tables (legacy codec ids and
sound formats, Enhanced RTMP FourCCs, and back), the ``@setDataFrame`` name and
:data:`BODY_KEY`, the :meth:`Frame.encoded` key of a frame's tag body. The format both follow,
codec by codec, is described here once.

Ingest without copies: when the body a parser was given is exactly what
:func:`~.write.tag_body` would build again (a legacy H.264 body with frame type key or inter; an
AAC body with the 0xAF header byte; as FFmpeg and OBS send them), the parsed frame keeps that
very ``bytes`` object as its cached body (:meth:`Frame.preset`), so RTMP passes the publisher's
message body on and FLV tags are built around it, with nothing rebuilt.

Video (``Frame.codec`` <- FLV):

* legacy codec id 7 (AVC) -> ``h264``; codec id 12 (the pre-standard HEVC extension) ->
  ``hevc``. AVCPacketType 0 is a config frame (the decoder configuration record), 1 coded NAL
  units with a signed 24-bit composition time (``pts = dts + cts``), 2 (end of sequence) gives
  ``None``. Config frames have ``pts == dts`` (the spec's CompositionTime 0 for them) and
  are written with a composition time of 0.
* other legacy codec ids: 2 ``h263``, 3 ``screen``, 4 ``vp6``, 5 ``vp6a``, 6 ``screen2``; the
  payload is everything after the header byte (VP6's adjustment bytes included), so the body
  round-trips. Frame type 1 is a keyframe; every other frame type (inter, disposable inter,
  generated keyframe) reads as ``keyframe=False`` and is written back as 2 (inter): the
  disposable flag of H.263 is lost. Frame type 5 (video info/command) gives ``None``.
* Enhanced RTMP (the IsExHeader bit 0x80): FourCC ``avc1`` -> ``h264``, ``hvc1`` -> ``hevc``,
  ``vvc1`` -> ``vvc`` (these three carry an SI24 composition time in ``CodedFrames``),
  ``av01`` -> ``av1``, ``vp09`` -> ``vp9``, ``vp08`` -> ``vp8``. ``SequenceStart`` and
  ``MPEG2TSSequenceStart`` are config frames (the latter's payload, an AV1 video descriptor, is
  kept verbatim but written back as ``SequenceStart``); ``CodedFrames`` and ``CodedFramesX``
  are coded frames; ``SequenceEnd`` and ``Metadata`` (HDR ``colorInfo``) give ``None``.
  ``ModEx`` prefixes are skipped (their nanosecond timestamp offset does not fit millisecond
  frames).
* Multitrack (``PacketType`` 6 video, 5 audio): every ``AvMultitrackType`` is read.
  :func:`~.read.parse_video_tracks` / :func:`~.read.parse_audio_tracks` return one frame per
  track, with ``Frame.track`` set to the track id. :func:`~.read.parse_video` /
  :func:`~.read.parse_audio` handle the common case, one track per message (``OneTrack``, as
  OBS sends it), and raise :class:`FlvUnsupported` for a message that really carries several
  tracks.

Video (frame -> FLV): ``h264`` is written with legacy codec id 7 (what every player reads);
``hevc`` with the Enhanced RTMP ``hvc1`` FourCC (what OBS 30 and FFmpeg 6.1+ send and accept),
or legacy codec id 12 with ``legacy_hevc=True``; ``av1``, ``vp9``, ``vp8``, ``vvc`` Enhanced.
Coded ``avc1``/``hvc1``/``vvc1`` frames use ``CodedFramesX`` when the composition time is 0,
as FFmpeg does. A frame with ``track != 0`` is written as an Enhanced multitrack ``OneTrack``
message (``h264`` then uses ``avc1``). AV1 and VP8/9 carry no composition time: ``pts`` is not
written (it reads back equal to ``dts``).

Audio (``Frame.codec`` <- FLV). Frames are never keyframes (the kernel treats audio as sync
points itself when a stream has no video).

* SoundFormat 10 (AAC) -> ``aac``: AACPacketType 0 is a config frame (AudioSpecificConfig),
  1 a raw frame. The header byte is always written as 0xAF, as the FLV specification requires
  (players ignore its rate/size/channel bits for AAC).
* SoundFormat 2 (MP3) and 14 (MP3 8 kHz) -> ``mp3``. The header byte is not kept: it is
  derived again from the first MPEG audio frame header of the payload (sample rate: 44.1, 48
  and 32 kHz are written as the 44.1 kHz flag, as FFmpeg does, 22.05/24/16 kHz as 22 kHz,
  11.025/12 kHz as 11 kHz, 8 kHz as SoundFormat 14; mono or stereo from the channel mode;
  16-bit), or 0x2F (44.1 kHz stereo) when the payload does not start with a frame header.
  Bodies written by FFmpeg round-trip byte for byte.
* Every other legacy format keeps its exact header byte in the codec string
  ``"<name>/<rate>/<bits>/<channels>"``, e.g. ``"pcm_le/44100/16/2"``: names ``pcm`` (0,
  platform endian), ``adpcm`` (1), ``pcm_le`` (3), ``nellymoser_16k`` (4),
  ``nellymoser_8k`` (5), ``nellymoser`` (6), ``alaw`` (7), ``mulaw`` (8), ``speex`` (11);
  rate one of 5512, 11025, 22050, 44100; bits 8 or 16; channels 1 or 2. See
  :func:`legacy_audio_codec`. The payload is everything after the header byte.
* Enhanced audio (SoundFormat 9): FourCC ``Opus`` -> ``opus``, ``fLaC`` -> ``flac``, ``ac-3``
  -> ``ac3``, ``ec-3`` -> ``eac3``, ``.mp3`` -> ``mp3``, ``mp4a`` -> ``aac``.
  ``SequenceStart`` is a config frame, ``CodedFrames`` a raw one, ``SequenceEnd`` and
  ``MultichannelConfig`` give ``None`` (the channel layout is not kept). ``opus``, ``flac``,
  ``ac3`` and ``eac3`` frames are written Enhanced; ``aac`` and ``mp3`` legacy, unless the
  frame has ``track != 0`` (or is an ``mp3`` config frame), which needs the Enhanced form.

Script data: :func:`~.read.parse_data` reads the leading AMF0 string name at the byte level
(marker 0x02, u16 length, name) and needs no AMF0 decoder. An ``@setDataFrame`` wrapper is
removed, so a metadata frame's payload is the ``onMetaData`` name and its value, as in an FLV
file. That frame is ``kind=DATA, codec="amf0", config=True``; other data (``onCuePoint``,
``onTextData``...) has ``config=False`` and is kept whole.

Error policy:

* This module defines what reading raises for the peer's bytes: :class:`FlvError` (a
  ``RemoteProtocolError``), and :class:`FlvUnsupported` (a subclass of :class:`FlvError`) for a
  well-formed body the FLV modules do not handle (a reserved codec id or packet type, an
  unknown FourCC, several tracks in one message given to :func:`~.read.parse_video`): a caller
  may drop that message and go on. Reading (:mod:`.read`) raises only these, or
  :class:`~arcly_trio.core.errors.MessageTooLarge`, whatever the bytes.
* :func:`legacy_audio_codec` and writing (:mod:`.write`) raise ``LocalProtocolError`` for what
  FLV cannot carry.
"""

from __future__ import annotations

from typing import Final

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "TAG_AUDIO",
    "TAG_VIDEO",
    "TAG_SCRIPT",
    "DEFAULT_MAX_TAG_BODY",
    "FlvError",
    "FlvUnsupported",
    "legacy_audio_codec",
]

TAG_AUDIO: Final = 8
TAG_VIDEO: Final = 9
TAG_SCRIPT: Final = 18

#: The largest tag body :class:`FlvReader` accepts by default (8 MiB).
DEFAULT_MAX_TAG_BODY: Final = 8 * 1024 * 1024

MAX_DATA_SIZE: Final = 0xFFFFFF
"""The largest tag body an FLV tag header can state (its DataSize is 24 bits)."""


class FlvError(RemoteProtocolError):
    """A malformed FLV tag body or FLV stream."""


class FlvUnsupported(FlvError):
    """A well-formed FLV tag body that uses something the FLV modules do not handle.

    Examples: a reserved codec id or packet type, an unknown Enhanced RTMP FourCC, a multitrack
    message with several tracks given to :func:`~.read.parse_video`. Dropping the message is
    safe.
    """


# --------------------------------------------------------------------------------------------
# What reading (:mod:`.read`) and writing (:mod:`.write`) share: the codec tables, the
# ``@setDataFrame`` name and the cache key of a frame's tag body
# --------------------------------------------------------------------------------------------

LEGACY_VIDEO_CODECS: Final[dict[int, str]] = {
    2: "h263",
    3: "screen",
    4: "vp6",
    5: "vp6a",
    6: "screen2",
}
LEGACY_VIDEO_IDS: Final[dict[str, int]] = {name: cid for cid, name in LEGACY_VIDEO_CODECS.items()}

VIDEO_FOURCC: Final[dict[bytes, str]] = {
    b"avc1": "h264",
    b"hvc1": "hevc",
    b"vvc1": "vvc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"vp08": "vp8",
}
VIDEO_FOURCC_OF: Final[dict[str, bytes]] = {name: cc for cc, name in VIDEO_FOURCC.items()}
# Codecs whose CodedFrames packets carry an SI24 composition time.
CTS_CODECS: Final = frozenset({"h264", "hevc", "vvc"})

AUDIO_FOURCC: Final[dict[bytes, str]] = {
    b"Opus": "opus",
    b"fLaC": "flac",
    b"ac-3": "ac3",
    b"ec-3": "eac3",
    b".mp3": "mp3",
    b"mp4a": "aac",
}
AUDIO_FOURCC_OF: Final[dict[str, bytes]] = {name: cc for cc, name in AUDIO_FOURCC.items()}

_LEGACY_AUDIO_NAMES: Final[dict[int, str]] = {
    0: "pcm",
    1: "adpcm",
    3: "pcm_le",
    4: "nellymoser_16k",
    5: "nellymoser_8k",
    6: "nellymoser",
    7: "alaw",
    8: "mulaw",
    11: "speex",
}
_SOUND_RATES: Final = (5512, 11025, 22050, 44100)

# The codec string of every legacy audio header byte, and back.
LEGACY_AUDIO_CODEC_OF_BYTE: Final[dict[int, str]] = {}
LEGACY_AUDIO_BYTE_OF_CODEC: Final[dict[str, int]] = {}
for _fmt, _name in _LEGACY_AUDIO_NAMES.items():
    for _flags in range(16):
        _codec = f"{_name}/{_SOUND_RATES[_flags >> 2]}/{16 if _flags & 2 else 8}/{(_flags & 1) + 1}"
        LEGACY_AUDIO_CODEC_OF_BYTE[(_fmt << 4) | _flags] = _codec
        LEGACY_AUDIO_BYTE_OF_CODEC[_codec] = (_fmt << 4) | _flags
del _fmt, _name, _flags, _codec


#: The ``@setDataFrame`` name of the script data an RTMP publisher sends (AMF0 string).
SET_DATA_FRAME: Final = b"\x02\x00\x0d@setDataFrame"
#: The :meth:`Frame.encoded` key of a frame's tag body (:func:`~.write.frame_body`), preset by
#: :mod:`.read` when the body it was given is what :func:`~.write.tag_body` would build again.
BODY_KEY: Final = ("flv-body",)


def legacy_audio_codec(name: str, rate: int, bits: int, channels: int) -> str:
    """The ``Frame.codec`` string of a legacy FLV audio format other than AAC and MP3.

    ``name`` is one of ``pcm``, ``adpcm``, ``pcm_le``, ``nellymoser_16k``, ``nellymoser_8k``,
    ``nellymoser``, ``alaw``, ``mulaw``, ``speex``; ``rate`` one of 5512, 11025, 22050, 44100;
    ``bits`` 8 or 16; ``channels`` 1 or 2. Raises ``LocalProtocolError`` for anything else.
    """
    codec = f"{name}/{rate}/{bits}/{channels}"
    if codec not in LEGACY_AUDIO_BYTE_OF_CODEC:
        raise LocalProtocolError(f"FLV has no legacy audio format {codec!r}")
    return codec
