"""The trio-free core: frames, stream keys and credentials, the error hierarchy, byte budgets.

Everything here is plain Python (attrs, the standard library). The sans-IO media formats and
protocol cores build on it, and so does the kernel; importing it never loads trio.
"""

from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .frame import Frame, FrameBatch, FrameKind
from .keys import Credentials, StreamKey

__all__ = ["Frame", "FrameBatch", "FrameKind", "Credentials", "StreamKey", *_errors_all]
