"""arcly-trio: a live-media streaming kernel and server built on trio.

The kernel (:mod:`arcly_trio.kernel`) is re-exported here; protocol workers live in
:mod:`arcly_trio.protocols`, sans-IO media formats in :mod:`arcly_trio.media`, the command-line
server in :mod:`arcly_trio.server` and property-testing helpers in :mod:`arcly_trio.testing`.
"""

from .kernel import *  # noqa: F403
from .kernel import __all__ as _kernel_all

__version__ = "0.1.0"

__all__ = ["__version__", *_kernel_all]
