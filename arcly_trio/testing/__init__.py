"""Helpers for users who test their own servers built on arcly-trio.

* :mod:`.frames` — builders of synthetic configs, keyframes, deltas, audio and whole GOPs;
* :mod:`.observer` — :class:`CountingObserver`;
* :mod:`.strategies` — hypothesis strategies for frames and publishable sequences;
* :mod:`.races` — :func:`~.races.run_races`, :class:`~.races.RaceSetup` and
  :class:`~.races.EngineRaces`: property-test publish/unpublish/play races against your engine
  (its actors in :mod:`.actors`, its invariant checkers in :mod:`.invariants`);
* :mod:`.server_races` — :class:`~.server_races.ServerRaces`: the same over real RTMP and
  HTTP-FLV connections to your workers.
* :mod:`.rtmp` — :class:`~.rtmp.RawRtmpClient`: a raw RTMP client for tests that must send
  what a well-behaved client never would.

``strategies``, ``races``, ``actors`` and ``server_races`` need hypothesis
(``pip install 'arcly-trio[test]'``); importing this package does not, and they are loaded when
first used (``from arcly_trio.testing import races`` or ``arcly_trio.testing.races``).
"""

from arcly_trio.testing.frames import (
    audio,
    audio_config,
    delta,
    keyframe,
    metadata,
    real_stream,
    synthetic_gop,
    synthetic_stream,
    video_config,
)
from arcly_trio.testing.observer import CountingObserver

__all__ = [
    "audio",
    "audio_config",
    "delta",
    "keyframe",
    "metadata",
    "synthetic_gop",
    "synthetic_stream",
    "real_stream",
    "video_config",
    "CountingObserver",
]


def __getattr__(name: str) -> object:
    """``races``, ``server_races`` and ``strategies`` need hypothesis: imported on first use."""
    if name in ("races", "server_races", "strategies"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
