"""Sans-IO cores of WebRTC (issue 22): the STUN messages ICE-lite needs (:mod:`.stun`), the
ICE-lite agent of a session (:mod:`.ice`), SDP offer/answer for WHIP and WHEP (:mod:`.sdp`) and
the RFC 7983 demux of the one media port (:mod:`.demux`).

Error policy: each core raises its own :class:`~arcly_trio.core.errors.RemoteProtocolError`
subclass for bad input (see each module); nothing here does I/O or imports trio.
"""
