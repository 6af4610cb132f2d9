"""Sans-IO cores of RTSP (issue 25): the message codec (:mod:`.messages`: requests, responses
and ``$``-interleaved RTP/RTCP over one TCP connection), SDP for DESCRIBE and ANNOUNCE
(:mod:`.sdp`) and the ``Transport`` header (:mod:`.transport`). The server worker
(:mod:`arcly_trio.workers.rtsp`) and the camera-pull client share them; the RTP payload formats
are the WebRTC ones (:mod:`arcly_trio.protocols.webrtc.payload`).

Error policy: each core raises :class:`~arcly_trio.protocols.rtsp.messages.RtspError` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for bad input from the peer, and
``ValueError`` for values of ours that cannot be encoded; nothing here does I/O or imports trio.
"""
