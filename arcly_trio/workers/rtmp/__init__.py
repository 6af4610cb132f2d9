"""The RTMP protocol worker: OBS and ffmpeg publish to it, players play from it."""

from arcly_trio.workers.rtmp.server import RtmpServer

__all__ = ["RtmpServer"]
