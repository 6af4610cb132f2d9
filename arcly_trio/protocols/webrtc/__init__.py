"""Sans-IO cores of WebRTC (issue 22), so far the STUN messages ICE-lite needs (:mod:`.stun`).

Error policy: each core raises its own :class:`~arcly_trio.core.errors.RemoteProtocolError`
subclass for bad input (see each module); nothing here does I/O or imports trio.
"""
