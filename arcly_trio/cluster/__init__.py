"""Clusters: several engines (the workers of one machine, or machines) as one service.

* :mod:`.directory` — the :class:`ClusterDirectory` protocol: nodes, stream leases,
  announcements; :mod:`.memory` — in memory; :mod:`.redis` — on Redis (``--cluster``);
  :mod:`.local` — the supervisor's, served to its workers over a Unix socket (``--workers``);
* :mod:`.node` — :class:`ClusterNode`: registers, leases what is published here, pulls from the
  owner what is published elsewhere.

See ``docs/cluster.md`` for the design and deployments.
"""

from arcly_trio.cluster.directory import Announcement, ClusterDirectory, NodeInfo
from arcly_trio.cluster.local import DirectoryServer, LocalDirectory
from arcly_trio.cluster.memory import MemoryDirectory
from arcly_trio.cluster.node import RELAYED_PROTOCOLS, ClusterNode

__all__ = [
    "Announcement",
    "ClusterDirectory",
    "ClusterNode",
    "DirectoryServer",
    "LocalDirectory",
    "MemoryDirectory",
    "NodeInfo",
    "RELAYED_PROTOCOLS",
]
