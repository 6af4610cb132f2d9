"""The RTSP protocol worker (issue 25): players (DESCRIBE/SETUP/PLAY) and publishers
(ANNOUNCE/SETUP/RECORD) over RTP interleaved on TCP or UDP unicast, on the sans-IO cores of
:mod:`arcly_trio.protocols.rtsp` and the RTP layer WebRTC uses (:mod:`arcly_trio.protocols.webrtc`).

Error policy: see :mod:`.server` (one connection's failure closes that connection only).
"""
