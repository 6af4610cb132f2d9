"""The kernel: engine, applications, streams, frames, auth, observers, events, errors.

Everything here is transport-agnostic; protocol workers drive it through ``Engine.publish`` and
``Engine.subscribe``.
"""

from .application import Application
from .auth import AllowAll, Authenticator, TokenAuthenticator
from .engine import Engine, EngineBuilder, ProtocolWorker, StreamService
from ..core.errors import *  # noqa: F403
from ..core.errors import __all__ as _errors_all
from .events import *  # noqa: F403
from .events import __all__ as _events_all
from ..core.frame import Frame, FrameKind
from ..core.keys import Credentials, StreamKey
from .observe import Observer
from .qos import StreamInfo, StreamStats
from .spec import AppSpec, Takeover
from .stream import Publisher, Stream
from .subscription import EndReason, Subscription

__all__ = [
    "Application",
    "AllowAll",
    "Authenticator",
    "TokenAuthenticator",
    "Engine",
    "EngineBuilder",
    "ProtocolWorker",
    "StreamService",
    "Frame",
    "FrameKind",
    "Credentials",
    "StreamKey",
    "Observer",
    "StreamInfo",
    "StreamStats",
    "AppSpec",
    "Takeover",
    "Publisher",
    "Stream",
    "EndReason",
    "Subscription",
    *_errors_all,
    *_events_all,
]
