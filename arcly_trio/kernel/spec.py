"""How an application behaves: the knobs of its streams."""

from __future__ import annotations

import enum
import math

import attrs

from arcly_trio.core.keys import check_name

__all__ = ["AppSpec", "Takeover", "DEFAULT_MAX_PUBLISH_BITRATE", "MAX_DVR_WINDOW"]

#: ``arcly-trio serve``'s ``--max-publish-bitrate``: 50 Mbit/s, far above a live encoder's output.
DEFAULT_MAX_PUBLISH_BITRATE = 50_000_000
#: The longest DVR window (``AppSpec.dvr_window``, ``--dvr-window``): 6 hours.
MAX_DVR_WINDOW = 6 * 3600.0


class Takeover(enum.Enum):
    """What happens when a second publisher arrives for a key that already has one."""

    REJECT = "reject"
    """The newcomer gets ``StreamAlreadyPublishing``; the current publisher goes on."""
    REPLACE = "replace"
    """The newcomer takes over; the old publisher gets ``PublisherReplaced``; subscribers stay."""


def _non_negative(instance: object, attribute: attrs.Attribute[object], value: object) -> None:
    if value is not None and value < 0:  # type: ignore[operator]
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


def _finite_non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, not {value!r}")


def _dvr_window(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= MAX_DVR_WINDOW:  # NaN fails too
        raise ValueError(f"{attribute.name} must be from 0 to {MAX_DVR_WINDOW:g} seconds, not {value!r}")


def _positive(instance: object, attribute: attrs.Attribute[object], value: object) -> None:
    if value < 1:  # type: ignore[operator]
        raise ValueError(f"{attribute.name} must be >= 1, not {value!r}")


@attrs.frozen(kw_only=True)
class AppSpec:
    """One application (the ``live`` in ``rtmp://host/live/demo``) and its stream policy.

    Attributes:
        name: the application name.
        gop_cache_frames: most frames kept of the current GOP for late joiners; 0 = no GOP cache.
        gop_cache_bytes: most payload bytes kept of the current GOP; 0 = no byte cap.
            Past either cap the GOP is dropped whole until the next keyframe (never trimmed from
            the front, so a replay never starts mid-GOP).
        subscriber_queue: frames a subscriber may have queued before it starts dropping (in
            its ``Subscription``, or waiting for its socket in a protocol worker's egress).
        lag_budget: evict a subscriber once it has dropped more than this many frames in
            total; ``None`` = never evict.
        takeover: policy for a second publisher on the same key.
        reconnect_grace: seconds a stream whose publisher left waits for one to come back before
            its subscribers are ended.
        ingest_queue: frames a publisher may have in flight to the stream task before its
            ``send`` waits (for the stream task, never for a subscriber).
        audio_hold: on streams with video, hold up to this many audio frames that arrive after
            a video frame and deliver them with the next one (0 = off). Subscribers are then
            woken once per video frame instead of once per frame; audio waits at most one
            video frame interval (and never more than 100 ms).
        batch_interval: seconds to gather frames between two deliveries (0 = deliver as soon
            as they arrive). Frames that arrive sooner after a delivery wait, then go out
            together: every viewer gets fewer, larger writes (less CPU per viewer) for up to
            that much more latency. A burst of half a subscriber queue goes out at once.
        services: the names of the stream services that apply to this application (a
            service named ``"hls"`` packages its streams as HLS when ``"hls"`` is listed...).
        hls: shorthand for ``"hls"`` in ``services``.
        hls_variant: how the HLS service packages this application's streams: ``"ts"``
            (MPEG-TS), ``"fmp4"`` (fragmented MP4, and DASH) or ``"ll"`` (Low-Latency HLS on
            fragmented MP4, and DASH); ``None``: the service's own default.
        hls_muxed: in the ``fmp4`` and ``ll`` variants, one rendition whose parts carry both
            the video and the audio (one ``moof`` with a ``traf`` per track) instead of a video
            rendition and an alternative audio rendition: an LL-HLS player makes half the
            requests. DASH is then not offered (it needs the tracks apart).
        record: shorthand for ``"record"`` in ``services``.
        record_max_age: the recorder deletes this application's segments that ended longer
            ago than this (seconds; 0: never); ``None``: the recorder's own setting.
        record_max_bytes: the recorder keeps at most this many bytes of this application's
            segments, deleting the oldest first (0: no cap); ``None``: the recorder's own setting.
        max_publish_bitrate: the most media a publisher may send, in bits/s, averaged with a
            burst allowance of a few seconds of it (:mod:`.ratelimit`); past it the publish is
            cut (``PublishRateLimited``). 0 = no limit (the default here, like the engine's other
            limits; ``arcly-trio serve`` sets :data:`DEFAULT_MAX_PUBLISH_BITRATE`).
        dvr_window: seconds of the live HLS playlist kept so that players can seek back (DVR),
            up to :data:`MAX_DVR_WINDOW` (6 hours); 0 = off (the playlist lists the live window
            only). See ``arcly_trio.services.hls``.
    """

    name: str = attrs.field(kw_only=False)
    gop_cache_frames: int = attrs.field(default=1024, validator=_non_negative)
    gop_cache_bytes: int = attrs.field(default=32 * 1024 * 1024, validator=_non_negative)
    subscriber_queue: int = attrs.field(default=256, validator=_positive)
    lag_budget: int | None = attrs.field(default=None, validator=_non_negative)
    takeover: Takeover = attrs.field(default=Takeover.REJECT, converter=Takeover)
    reconnect_grace: float = attrs.field(default=0.0, validator=_non_negative)
    ingest_queue: int = attrs.field(default=64, validator=_positive)
    audio_hold: int = attrs.field(default=8, validator=_non_negative)
    batch_interval: float = attrs.field(default=0.0, validator=_finite_non_negative)
    services: frozenset[str] = attrs.field(factory=frozenset, converter=frozenset)
    hls: bool = False
    hls_variant: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(("ts", "fmp4", "ll")))
    )
    hls_muxed: bool = False
    record: bool = False
    record_max_age: float | None = attrs.field(default=None, validator=attrs.validators.optional(_finite_non_negative))
    record_max_bytes: int | None = attrs.field(default=None, validator=attrs.validators.optional(_non_negative))
    max_publish_bitrate: int = attrs.field(default=0, validator=_non_negative)
    dvr_window: float = attrs.field(default=0.0, validator=_dvr_window)

    def uses(self, service: str) -> bool:
        """Whether the stream service named ``service`` applies to this application."""
        return service in self.services or (service == "hls" and self.hls) or (service == "record" and self.record)

    @name.validator
    def _check_name(self, attribute: attrs.Attribute[str], value: str) -> None:
        check_name(value, "application name")
