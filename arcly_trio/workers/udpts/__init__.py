"""UDP MPEG-TS ingest: a configured UDP port (unicast or a multicast group) publishes one stream
(see :mod:`.ingest`).

Error policy: see :mod:`.ingest`; a sender's failure ends its session only.
"""

from arcly_trio.workers.udpts.ingest import DEFAULT_IDLE, PROTOCOL, UdpTsIngest, UdpTsSource, parse_ingest_udp

__all__ = ["UdpTsIngest", "UdpTsSource", "parse_ingest_udp", "DEFAULT_IDLE", "PROTOCOL"]
