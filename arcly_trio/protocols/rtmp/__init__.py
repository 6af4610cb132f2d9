"""RTMP, sans-IO: the handshake, the chunk stream, protocol messages, and both sides of a session.

* :mod:`.handshake` — the C0/C1/C2 and S0/S1/S2 exchange (simple and digest);
* :mod:`.chunks` — messages cut into chunks and reassembled, with memory limits;
* :mod:`.messages` — protocol control and user control message payloads;
* :mod:`.events` — what a session's ``next_event`` returns;
* :mod:`.endpoint` — what both sides share (acknowledgements, pings, aggregates, timestamps);
* :mod:`.server_states` — every state and transition of the server's session;
  :mod:`.server_session` — the server's state machine; :mod:`.client_session` — the client's
  raw session; :mod:`.client` — the client's whole conversation (handshake to close);
* :mod:`.media` — frames as chunked messages, built once and shared; :mod:`.url` — RTMP URLs.

None of it imports trio: the worker is :mod:`arcly_trio.workers.rtmp`.
"""

from arcly_trio.protocols.rtmp.client import ClientMode, ClientState, RtmpClient
from arcly_trio.protocols.rtmp.client_session import ClientSession
from arcly_trio.protocols.rtmp.endpoint import (
    CSID_AUDIO,
    CSID_COMMAND,
    CSID_CONTROL,
    CSID_DATA,
    CSID_VIDEO,
    RtmpEndpoint,
)
from arcly_trio.protocols.rtmp.events import *  # noqa: F403
from arcly_trio.protocols.rtmp.events import __all__ as _events_all
from arcly_trio.protocols.rtmp.server_session import ServerSession
from arcly_trio.protocols.rtmp.server_states import ConnectionState, Decision, StreamState
from arcly_trio.protocols.rtmp.url import RtmpUrl, fill_template, parse_rtmp_url

__all__ = [
    "RtmpClient",
    "ClientMode",
    "ClientState",
    "RtmpUrl",
    "parse_rtmp_url",
    "fill_template",
    "ClientSession",
    "ServerSession",
    "RtmpEndpoint",
    "ConnectionState",
    "StreamState",
    "Decision",
    "CSID_CONTROL",
    "CSID_COMMAND",
    "CSID_AUDIO",
    "CSID_DATA",
    "CSID_VIDEO",
    *_events_all,
]
