"""Clients of arcly-trio's own protocols, for trio programs and tests.

:mod:`.frames`: the ``arcly.frames.v1`` WebSocket frame protocol (play and publish).
"""

from .frames import (
    FramesClosed,
    FramesPublisher,
    FramesRefused,
    FramesSubscription,
    open_frames_publisher,
    open_frames_subscription,
)

__all__ = [
    "FramesClosed",
    "FramesPublisher",
    "FramesRefused",
    "FramesSubscription",
    "open_frames_publisher",
    "open_frames_subscription",
]
