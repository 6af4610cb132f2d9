"""Whether a stream's playlist or MPD can be answered now (:meth:`HlsService.list_state`).

Error policy: nothing here raises.
"""

from __future__ import annotations

import enum

__all__ = ["ListState"]


class ListState(enum.Enum):
    """Whether a request for one of a stream's lists is answered from the storage now
    (``READY``), waits for the stream's packaging to store it (``WAIT``) or finds nothing
    (``NONE``: the packaging will not make it). See
    :meth:`arcly_trio.services.hls.HlsService.list_state`."""

    READY = "ready"
    WAIT = "wait"
    NONE = "none"
