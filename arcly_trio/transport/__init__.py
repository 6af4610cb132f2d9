"""The transport seen through arcly-trio's errors: one place that maps trio's transport errors.

A layer between the kernel and the protocol adapters: it imports only :mod:`arcly_trio.core`
(and trio), and the workers, clients, relays, cluster, server, ops and testing helpers use it.
See :mod:`.errors`.
"""

from __future__ import annotations

from arcly_trio.transport.errors import TRANSPORT_ERRORS, describe, map_transport_errors

__all__ = ["TRANSPORT_ERRORS", "describe", "map_transport_errors"]
