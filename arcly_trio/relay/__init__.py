"""Relays: streams that leave for, or come from, another server.

* :mod:`.push` — :class:`PushService`: every publish of the applications it applies to is
  forwarded to RTMP targets (``--push``), each retried with backoff on its own;
* :mod:`.pull` — :class:`PullSource`: a play request for a stream that is not here pulls it
  from an upstream (RTMP or HTTP-FLV, ``--pull``), shared by its viewers, stopped when idle;
* :mod:`.upstream` — one upstream connection as batches of frames, whatever its protocol;
* :mod:`.links` — the state of one relay connection (for ``/api/streams``) and the backoff.

Relayed streams are ordinary streams of the engine: the GOP cache, the stream services (HLS,
recording) and every egress work on them. The cluster (:mod:`arcly_trio.cluster`) pulls from
the node that owns a stream with the same code.
"""

from arcly_trio.relay.links import Backoff, LinkStats
from arcly_trio.relay.pull import PullSource, pull_into
from arcly_trio.relay.push import PushService, PushTarget
from arcly_trio.relay.upstream import open_upstream

__all__ = ["Backoff", "LinkStats", "PullSource", "PushService", "PushTarget", "open_upstream", "pull_into"]
