"""SRT (Secure Reliable Transport, live mode) as a sans-IO core: datagrams in, events and
datagrams out; no trio. :mod:`.packet` is the wire codec, :mod:`.handshake` the listener's
stateless induction (SYN cookie) and conclusion, :mod:`.connection` one established session's
receive and send sides, :mod:`.streamid` the streamid conventions users already use.
"""
