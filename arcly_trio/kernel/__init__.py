"""The kernel: engine, applications, streams, fan-out, auth, observers, events.

Everything here is transport-agnostic; protocol workers drive it through ``Engine.publish``,
``Engine.subscribe`` and ``Engine.attach``. The frame, key and error types it uses are the
trio-free :mod:`arcly_trio.core`'s, re-exported here.
"""

from arcly_trio.core.errors import *  # noqa: F403
from arcly_trio.core.errors import __all__ as _errors_all
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.application import Application
from arcly_trio.kernel.auth import AllowAll, Authenticator, TokenAuthenticator
from arcly_trio.kernel.engine import Engine, EngineBuilder, ProtocolWorker
from arcly_trio.kernel.events import *  # noqa: F403
from arcly_trio.kernel.events import __all__ as _events_all
from arcly_trio.kernel.fanout import EndReason, SessionStart, Sink, Subscriber
from arcly_trio.kernel.health import CheckResult, HealthRegistry
from arcly_trio.kernel.observe import Observer
from arcly_trio.kernel.qos import StreamStats
from arcly_trio.kernel.service import StreamService
from arcly_trio.kernel.sessions import ClientSession, SessionTable
from arcly_trio.kernel.sources import SourceRequest, StreamSource
from arcly_trio.kernel.spec import AppSpec, Takeover
from arcly_trio.kernel.stream import Publisher, Stream
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.kernel.throttle import AuthThrottle
from arcly_trio.media.probe import StreamInfo

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
