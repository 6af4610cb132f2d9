"""Running it for real: authorization pieces, metrics, the audit log, storage health checks.

* :mod:`.hooks`: HTTP callbacks (``on_publish``, ``on_play`` as an authenticator; ``on_event``
  notifications as an observer), on httpx;
* :mod:`.signing`: Node-Media-Server's signed expiring URLs and HS256 JWTs (PyJWT);
* :mod:`.composite`: authenticators of authenticators (any of, all of, for some actions);
* :mod:`.metrics`: a Prometheus observer with a private registry and ``GET /metrics``;
* :mod:`.audit`: the audit log (a bounded, drop-counting pipeline into a sink: JSON lines);
* :mod:`.health`: storage health checks.

Everything here plugs into the engine through the kernel's seams (``EngineBuilder.authenticator``,
``EngineBuilder.observer``, ``engine.health``) and is usable by library users as it is.
"""

from arcly_trio.ops.audit import AuditPipeline, AuditSink, JsonLinesFile, MemorySink
from arcly_trio.ops.composite import AllOf, AnyOf, ByApp, ForActions, Swappable, TrustedPeers
from arcly_trio.ops.health import storage_check
from arcly_trio.ops.hooks import EventHook, HookCalled, HttpHooks
from arcly_trio.ops.metrics import PrometheusObserver
from arcly_trio.ops.signing import SignedUrlAuthenticator, make_jwt, nms_sign, sign_url

__all__ = [
    "AuditPipeline",
    "AuditSink",
    "JsonLinesFile",
    "MemorySink",
    "AllOf",
    "AnyOf",
    "ForActions",
    "ByApp",
    "Swappable",
    "TrustedPeers",
    "storage_check",
    "EventHook",
    "HookCalled",
    "HttpHooks",
    "PrometheusObserver",
    "SignedUrlAuthenticator",
    "make_jwt",
    "nms_sign",
    "sign_url",
]
