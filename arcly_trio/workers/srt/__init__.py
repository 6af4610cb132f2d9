"""The SRT worker: one UDP port (``--srt-port``) for every SRT publisher and player."""

from arcly_trio.workers.srt.server import SrtServer

__all__ = ["SrtServer"]
