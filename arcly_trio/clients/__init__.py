"""Clients of arcly-trio's own protocols, for trio programs and tests.

:mod:`.frames`: the ``arcly.frames.v1`` WebSocket frame protocol (play and publish).
:mod:`.rtmp`: RTMP (publish to and play from any RTMP server).
:mod:`.webrtc`: WHEP (play) and WHIP (publish), on trio.
:mod:`.hls`: an LL-HLS load generator (viewers that follow playlists as hls.js low-latency mode does).
"""

from arcly_trio.clients.frames import (
    FramesClosed,
    FramesPublisher,
    FramesRefused,
    FramesSubscription,
    open_frames_publisher,
    open_frames_subscription,
)
from arcly_trio.clients.rtmp import RtmpPlayer, RtmpPublisher, open_rtmp_player, open_rtmp_publisher
from arcly_trio.clients.webrtc import WhepPlayer, WhipPublisher, open_whep_player, open_whip_publisher

__all__ = [
    "RtmpPlayer",
    "RtmpPublisher",
    "open_rtmp_player",
    "open_rtmp_publisher",
    "FramesClosed",
    "FramesPublisher",
    "FramesRefused",
    "FramesSubscription",
    "open_frames_publisher",
    "open_frames_subscription",
    "WhepPlayer",
    "WhipPublisher",
    "open_whep_player",
    "open_whip_publisher",
]
