"""Helpers for users who test their own servers built on arcly-trio.

* :mod:`.frames` — builders of synthetic configs, keyframes, deltas, audio and whole GOPs;
* :mod:`.observer` — :class:`CountingObserver`;
* :mod:`.strategies` — hypothesis strategies for frames and publishable sequences;
* :mod:`.races` — :class:`EngineRaces`, a stateful machine for publish/subscribe races.

``strategies`` and ``races`` need hypothesis (``pip install 'arcly-trio[test]'``); importing
this package does not.
"""

from .frames import (
    audio,
    audio_config,
    delta,
    keyframe,
    metadata,
    synthetic_gop,
    synthetic_stream,
    video_config,
)
from .observer import CountingObserver

__all__ = [
    "audio",
    "audio_config",
    "delta",
    "keyframe",
    "metadata",
    "synthetic_gop",
    "synthetic_stream",
    "video_config",
    "CountingObserver",
]
