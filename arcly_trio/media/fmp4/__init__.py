"""A sans-IO fragmented MP4 (CMAF) writer for the kernel's frames: init segments and fragments.

This is the container for fMP4 HLS, LL-HLS (RFC 8216bis) parts and DASH segments. It never
touches a clock, a socket or a file: frames go in, ``bytes`` come out.

Three steps:

* :func:`track_from_config` turns a config frame (a sequence header) into an :class:`Fmp4Track`:
  its codec, its ISO BMFF sample entry, its picture size or audio format, and its timescale.
  VP9 (always) and AV1 (when its ``av1C`` carries no sequence header) need the first keyframe
  too, for the picture size: :func:`needs_keyframe` says so.
* :func:`init_segment` writes the CMAF header: ``ftyp`` + ``moov`` (``mvhd``, one ``trak`` per
  track with empty sample tables, ``mvex`` with one ``trex`` per track).
* :class:`FragmentWriter` takes media frames (:meth:`~FragmentWriter.push`) and cuts them into
  fragments (:meth:`~FragmentWriter.fragment`): ``moof`` + ``mdat``, each a :class:`Fragment`
  with its bytes and what a packager needs to list it (start, duration, independent, size).

Modules
    :mod:`.boxes` (box, FullBox and descriptor writing), :mod:`.init` (tracks, sample entries
    and the init segment), :mod:`.fragment` (the fragment writer); every public name is
    importable from here. The codec records are parsed by :mod:`arcly_trio.media.codecs`
    (:func:`~arcly_trio.media.codecs.parse_config`); a caller that has parsed a config already
    passes it as ``track_from_config(..., parsed=...)``.

Codecs and sample entries
    ``h264`` -> ``avc1`` + ``avcC``; ``hevc`` -> ``hvc1`` + ``hvcC`` (what Apple requires; the
    records are written as the publisher sent them); ``av1`` -> ``av01`` + ``av1C``; ``vp9`` ->
    ``vp09`` + ``vpcC`` (a FullBox of version 1; the record is accepted with or without the
    version and flags in front, as FFmpeg sends it with them); ``aac`` -> ``mp4a`` + ``esds``
    (ES_Descriptor, DecoderConfigDescriptor with objectTypeIndication 0x40, DecoderSpecificInfo =
    the AudioSpecificConfig, SLConfigDescriptor 2); ``opus`` -> ``Opus`` + ``dOps``, converted
    from the ``OpusHead`` identification header that Enhanced RTMP's SequenceStart carries.
    Picture sizes come from the H.264/HEVC SPS, the AV1 sequence header OBU (in the ``av1C``
    configOBUs, else in the first keyframe) and the uncompressed header of the first VP9
    keyframe; audio rate and channels from the AudioSpecificConfig or the ``OpusHead`` (a PCE
    defined AAC layout is written as 2 channels: decoders read the PCE).

Samples
    A sample's bytes are the frame payload as it is (for H.264/HEVC the length-prefixed NAL units
    are the MP4 sample layout already), except that a leading AV1 temporal delimiter OBU is left
    out, as the AV1 ISO BMFF binding asks. Keyframes are sync samples (``sample_depends_on`` 2);
    other video samples are non-sync (``sample_depends_on`` 1, ``sample_is_non_sync_sample``).
    Audio samples are all sync. Video frames of a track before its first keyframe are dropped and
    counted in :attr:`FragmentWriter.dropped_frames`, so every video track starts decodable.

Timescales
    Video: 90 000 (1 ms is exactly 90 ticks). Audio: the sample rate (48 000 for Opus). Frame
    timestamps are milliseconds; a timestamp becomes ``round(ms * timescale / 1000)`` ticks,
    computed from the absolute timestamp every time, never accumulated, so rates that are not a
    multiple of 1000 (44 100) never drift: each sample's decode time is its own timestamp rounded
    to the nearest tick, and durations are differences of those, so they add up exactly. A
    timescale can be chosen per track (``track_from_config(..., timescale=1000)`` makes every
    value exact milliseconds).

Durations: the writer holds back one sample per track
    A sample's duration is the distance from its decode time to the next sample's of the same
    track, so the newest sample of each track stays in the writer until the next one arrives.
    :meth:`FragmentWriter.fragment` writes the samples whose duration is known (with ``until``,
    only those whose DTS is before it: a cut at any frame boundary, e.g. just before a keyframe
    that was just pushed). :meth:`FragmentWriter.flush` ends every track (at the end of a stream):
    the held-back samples get ``end - dts`` when an ``end`` is given and after them, or else the
    previous sample duration of their track (a codec frame for audio, 1/30 s for video, when
    there is none). So, per track, the durations of a fragment add up to its span and the
    ``tfdt`` of the next fragment is this ``tfdt`` plus that sum, except across a gap (below).

Timeline, jumps and discontinuities
    Output decode times never go backwards and never go below 0. The writer adds one offset
    (milliseconds, shared by all tracks so they stay in sync, 0 at first: decode times are the
    frames' own timestamps) to every timestamp. A frame is a *jump* when its DTS is not after
    the previous DTS of its track (a step back, or a repeated timestamp), lies before the end of
    what its track already wrote, would map below 0, or lies more than ``max_gap_ms`` (10 s by
    default) past the newest DTS of any track. At a jump, or at the first frame after
    :meth:`FragmentWriter.discontinuity` (the publisher restarted), the offset is changed so that
    the frame lands right at the end of everything written so far (the latest end of any
    track's newest sample): the output timeline goes on, continuous and monotonic, and the
    :class:`Fragment` that holds the frame has ``discontinuity`` set. A track that stalls (no
    frame for more than ``max_gap_ms`` while other tracks went on) resumes where its frames say:
    its last sample before the stall gets the previous duration and a gap is left in that track's
    timeline (a fragment then has two runs, two ``traf`` boxes, for that track). A gap follows a
    :meth:`FragmentWriter.flush` too when the stream then goes on.

Fragments
    ``moof`` (``mfhd`` with a sequence number that starts at 1 and counts fragments; one ``traf``
    per run of contiguous samples of a track, in track id order, with ``tfhd``
    (default-base-is-moof), ``tfdt`` (version 1, 64-bit) and ``trun`` (version 1, so negative
    composition offsets are legal, with data offset and per-sample duration, size, flags and,
    when a run has any, composition offsets)) + ``mdat`` with the runs' payloads in the same
    order. The bytes are built with one join of the headers and the payloads.
    :func:`merge_fragments` joins fragments of single-track writers cut at the same time into
    one ``moof`` (a ``traf`` per track, each with the ``track_ID`` it is given) + ``mdat``: the
    part of a muxed rendition, whose init segment lists the same tracks with those IDs.

Brands
    ``ftyp`` major brand ``iso6`` (version 0), compatible ``iso6``, ``cmfc`` (CMAF), ``mp41``,
    plus ``av01`` with an AV1 track: what FFmpeg writes in CMAF mode. ``iso6`` is the ISO BMFF
    brand that covers ``tfdt`` and default-base-is-moof; players were not checked beyond
    FFmpeg (see the tests).

Error policy
    Configs and codec bytes come from the publisher: a config that does not parse (a truncated
    or inconsistent record, no SPS in ``avcC``, an ``OpusTags`` comment header instead of the
    ``OpusHead``, a picture too large for a sample entry), a keyframe whose header does not
    parse, and a frame whose composition offset does not fit 32 signed bits raise
    :class:`~arcly_trio.media.codecs.CodecError` (a
    :class:`~arcly_trio.core.errors.RemoteProtocolError`); nothing else escapes on arbitrary
    bytes, and the writer is left as it was, so the caller may drop the frame and go on.
    Misuse raises :class:`~arcly_trio.core.errors.LocalProtocolError`: a codec this module
    cannot write (see :data:`SUPPORTED_CODECS`), a config that is not a config frame, a VP9/AV1
    track without the keyframe it needs, invalid settings, duplicate tracks, a frame whose codec
    differs from its track's, a fragment over 2 GiB. Frames of no track (data frames, tracks the
    writer was not built with) and config frames are not samples: :meth:`FragmentWriter.push`
    ignores them and returns ``False`` (compare a new config frame with :attr:`Fmp4Track.config`:
    a new configuration needs a new init segment and a new writer).
"""

from __future__ import annotations

from arcly_trio.media.fmp4.fragment import (
    DEFAULT_MAX_GAP_MS,
    Fragment,
    FragmentWriter,
    TrackRun,
    merge_fragments,
    ms_to_ticks,
)
from arcly_trio.media.fmp4.init import (
    BRANDS,
    SUPPORTED_CODECS,
    VIDEO_TIMESCALE,
    Fmp4Track,
    init_segment,
    needs_keyframe,
    track_from_config,
)

__all__ = [
    "SUPPORTED_CODECS",
    "VIDEO_TIMESCALE",
    "DEFAULT_MAX_GAP_MS",
    "BRANDS",
    "Fmp4Track",
    "TrackRun",
    "Fragment",
    "FragmentWriter",
    "track_from_config",
    "needs_keyframe",
    "init_segment",
    "ms_to_ticks",
    "merge_fragments",
]
