"""The WebRTC worker: WHIP ingest and WHEP playback on one UDP port (see :mod:`.server`).

Error policy: see each module; a session's failure ends that session only.
"""

from arcly_trio.workers.webrtc.server import DEFAULT_PORT, WebRtcBusy, WebRtcServer

__all__ = ["WebRtcServer", "WebRtcBusy", "DEFAULT_PORT"]
