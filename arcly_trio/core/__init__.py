"""The trio-free core: frames, stream keys and credentials, the error hierarchy, byte budgets.

Everything here is plain Python (attrs, the standard library). The sans-IO media formats and
protocol cores build on it, and so does the kernel; importing it never loads trio.
"""

from arcly_trio.core.errors import *  # noqa: F403
from arcly_trio.core.errors import __all__ as _errors_all
from arcly_trio.core.frame import Frame, FrameBatch, FrameKind
from arcly_trio.core.keys import Credentials, StreamKey

__all__ = ["Frame", "FrameBatch", "FrameKind", "Credentials", "StreamKey", *_errors_all]
