"""Clusters: several engines (the workers of one machine, or machines) as one service.

* :mod:`.directory` — the :class:`ClusterDirectory` protocol: nodes, stream leases,
  announcements; :mod:`.memory` — in memory; :mod:`.redis` — on Redis (``--cluster``);
  :mod:`.local` — the supervisor's, served to its workers over a Unix socket (``--workers``);
* :mod:`.node` — :class:`ClusterNode`: registers, leases what is published here, pulls from the
  owner what is published elsewhere.

See ``docs/cluster.md`` for the design and deployments.
"""

from .directory import Announcement, ClusterDirectory, NodeInfo
from .local import DirectoryServer, LocalDirectory
from .memory import MemoryDirectory
from .node import RELAYED_PROTOCOLS, ClusterNode

__all__ = ["Announcement", "ClusterDirectory", "ClusterNode", "DirectoryServer", "LocalDirectory",
           "MemoryDirectory", "NodeInfo", "RELAYED_PROTOCOLS"]
