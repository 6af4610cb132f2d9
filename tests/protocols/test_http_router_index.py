"""The router's first-segment index finds what trying every route in order finds (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.protocols.http.router import Route, Router


async def _handler(request: object, responder: object) -> None:  # never called
    pass


def linear_match(router: Router, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The router's answer before the index: every plain route, in order."""
    for route in router.routes:
        if route.websocket or method not in route.methods:
            continue
        found = route.regex.fullmatch(path)
        if found is not None:
            return route, found.groupdict()
    return None


PIECES = st.sampled_from(["api", "live", "watch", "x", "a.m3u8", "{app}", "{stream}", "{name}.flv", "p{n}", ""])
PATH_PIECES = st.sampled_from(["api", "live", "watch", "x", "a.m3u8", "cam", "c.flv", "p1", "p", ""])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    return "/" + "/".join(draw(st.lists(PIECES, min_size=1, max_size=4, unique=True)))  # a placeholder once


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(patterns(), st.booleans(), st.booleans()), min_size=1, max_size=12),
    st.lists(st.lists(PATH_PIECES, min_size=0, max_size=4), min_size=1, max_size=10),
    st.sampled_from(["GET", "HEAD", "DELETE"]),
)
def test_indexed_match_is_the_linear_match(
    routes: list[tuple[str, bool, bool]], paths: list[list[str]], method: str
) -> None:
    router = Router()
    for number, (pattern, first, delete) in enumerate(routes):
        methods = ("DELETE",) if delete else ("GET", "HEAD")
        router.add(pattern, _handler, methods=methods, first=first)
        if number % 3 == 0:
            router.websocket(pattern, _handler)
        # the index is remade after each change: ask between additions too
        probe = "/" + "/".join(paths[0])
        assert router.match(method, probe) == linear_match(router, method, probe)
    for pieces in paths:
        path = "/" + "/".join(pieces)
        assert router.match(method, path) == linear_match(router, method, path)
