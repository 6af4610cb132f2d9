"""The kernel: engine, applications, streams, fan-out, auth, observers, events.

Everything here is transport-agnostic; protocol workers drive it through ``Engine.publish``,
``Engine.subscribe`` and ``Engine.attach``. The frame, key and error types it uses are the
trio-free :mod:`arcly_trio.core`'s, re-exported here.
"""

from ..core.errors import *  # noqa: F403
from ..core.errors import __all__ as _errors_all
from ..core.frame import Frame, FrameKind
from ..core.keys import Credentials, StreamKey
from ..media.probe import StreamInfo
from .application import Application
from .service import StreamService
from .sources import SourceRequest, StreamSource
from .auth import AllowAll, Authenticator, TokenAuthenticator
from .engine import Engine, EngineBuilder, ProtocolWorker
from .events import *  # noqa: F403
from .events import __all__ as _events_all
from .fanout import EndReason, SessionStart, Sink, Subscriber
from .health import CheckResult, HealthRegistry
from .sessions import ClientSession, SessionTable
from .observe import Observer
from .qos import StreamStats
from .spec import AppSpec, Takeover
from .stream import Publisher, Stream
from .subscription import Subscription
from .throttle import AuthThrottle

__all__ = [
    "Application",
    "AllowAll",
    "Authenticator",
    "TokenAuthenticator",
    "AuthThrottle",
    "Engine",
    "EngineBuilder",
    "ProtocolWorker",
    "StreamService",
    "StreamSource",
    "SourceRequest",
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
    "SessionStart",
    "Sink",
    "Subscriber",
    "Subscription",
    "CheckResult",
    "HealthRegistry",
    "ClientSession",
    "SessionTable",
    *_errors_all,
    *_events_all,
]
