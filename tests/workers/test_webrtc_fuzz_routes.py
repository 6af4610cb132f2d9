"""The WHIP and WHEP routes, fuzzed (issue 22, "Attacker's view"): hypothesis POSTs random
bodies (bytes, mutated real offers, oversized ones), content types and headers to
``/{app}/{stream}/whep|whip``, and random ``DELETE``/``PATCH`` at session resources, of an
in-process server with a live stream; no answer is a ``500``: each is ``201`` with an SDP
answer, or a ``4xx``/``503`` with a text saying why.

Each example runs its own small engine (port 0), a modest number keeps it within seconds.
"""

from __future__ import annotations

import string

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame
from arcly_trio.protocols.webrtc.sdp import MAX_SDP_BYTES
from tests._net import HOST
from tests._serving import serving
from tests._webrtc import sdp_offer

_PRINTABLE = string.ascii_letters + string.digits + " ;=/,.-_:+*\"'()<>@[]?{}"
_VALID = [sdp_offer(), sdp_offer(send=True), sdp_offer(codecs=("vp9", "av1")), sdp_offer(send=True, codecs=("h264",))]
_LINES = sorted({line for offer in _VALID for line in offer.split("\r\n")})

_content_types = st.sampled_from(
    [
        "application/sdp",
        "APPLICATION/SDP; charset=utf-8",
        "application/sdp;",
        "text/plain",
        "application/json",
        "",
        "multipart/form-data; boundary=x",
        "application/trickle-ice-sdpfrag",
    ]
) | st.text(alphabet=_PRINTABLE, max_size=40).map(str.strip)

_mutated = st.lists(st.sampled_from(_LINES) | st.text(max_size=40), max_size=60).map(
    lambda lines: "\r\n".join(["v=0", *lines]).encode("utf-8", "surrogatepass")
)
_bodies = st.one_of(
    st.sampled_from([offer.encode() for offer in _VALID]),
    _mutated,
    st.binary(max_size=3000),
    st.sampled_from([b"", b"v=0\r\n" + b"a=x\r\n" * (MAX_SDP_BYTES // 5), b"\x00" * (MAX_SDP_BYTES + 1)]),
)
_headers = st.dictionaries(
    st.sampled_from(
        ["authorization", "content-encoding", "origin", "x-forwarded-for", "accept", "if-match", "expect", "range"]
    ),
    st.text(alphabet=_PRINTABLE, max_size=60).map(str.strip),  # httpx refuses surrounding spaces
    max_size=4,
)
_paths = st.tuples(
    st.sampled_from(["live", "nope", "x" * 200, "%2e%2e", "live%00"]),
    st.sampled_from(["cam", "other", "a/b", "..", "x" * 300]) | st.text(alphabet=string.ascii_lowercase, max_size=12),
    st.sampled_from(["whep", "whip"]),
)


def _check(response: httpx.Response) -> None:
    status = response.status_code
    assert status != 500, response.text
    if status == 201:
        assert response.headers["content-type"].startswith("application/sdp")
        assert response.headers["location"]
        assert "a=ice-lite" in response.text
    else:
        assert 400 <= status < 500 or status == 503, (status, response.text)
        assert response.text.strip(), status


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=st.lists(_paths, min_size=1, max_size=3), body=_bodies, content_type=_content_types, headers=_headers)
async def test_random_offers_never_get_a_500(
    demo_frames: list[Frame],
    paths: list[tuple[str, str, str]],
    body: bytes,
    content_type: str,
    headers: dict[str, str],
) -> None:
    async with serving(webrtc={"max_sessions_per_address": 2}) as served:
        async with served.engine.publish("live/cam") as publisher:
            for frame in demo_frames[:4]:
                await publisher.send(frame)
            base = f"http://{HOST}:{served.http.port}"
            with trio.fail_after(20):
                async with httpx.AsyncClient(timeout=10) as client:
                    for app, stream, kind in paths:
                        response = await client.post(
                            f"{base}/{app}/{stream}/{kind}",
                            content=body,
                            headers={**headers, "content-type": content_type},
                        )
                        _check(response)
                        location = response.headers.get("location") if response.status_code == 201 else None
                        target = location or f"/{app}/{stream}/{kind}/{stream or 'x'}"
                        for method in ("PATCH", "DELETE"):
                            other = await client.request(method, base + target, content=body[:2000])
                            assert other.status_code != 500, other.text
                            assert other.status_code in (200, 204) or 400 <= other.status_code < 500
