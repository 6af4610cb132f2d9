"""Shared fixtures: engines on port 0, the autojump clock, and a log of what was emitted; the
per-test timeouts (short for unit tests, long for the real-client tests marked ``interop``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from arcly_trio import AppSpec, Engine
from arcly_trio.testing import CountingObserver
from tests import _tools

#: Seconds a unit test may run (``pytest-timeout``). Measured on the idle 2-core machine, every
#: unit test takes under 5 s (except those with a ``timeout`` marker of their own: the race
#: machines, and the CMAF property test at 18 s), so a hang (a spin under the autojump clock: a
#: mutant that never cancels a publisher) costs a minute, not the 180 s that ``pyproject.toml``
#: gives the tests that drive real clients (ffmpeg, chromium, nginx...: marked ``interop``).
UNIT_TEST_TIMEOUT = 60.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test that is not marked ``interop`` the unit timeout, unless it has a
    ``timeout`` marker of its own, or a timeout was chosen for this run (``--timeout``,
    ``PYTEST_TIMEOUT``: to debug, ``--timeout 0`` turns them all off)."""
    if config.getoption("timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT"):
        return
    unit = pytest.mark.timeout(UNIT_TEST_TIMEOUT)
    for item in items:
        if item.get_closest_marker("interop") is None and item.get_closest_marker("timeout") is None:
            item.add_marker(unit)


@pytest.fixture(autouse=True)
def _real_clients_are_marked_interop(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that asks for a real tool (``tests._tools.require_*``) must be marked
    ``interop``: it gets the long timeout, and ``-m "not interop"`` leaves it out."""
    asked = _tools.tools_asked
    yield
    if _tools.tools_asked != asked and request.node.get_closest_marker("interop") is None:
        pytest.fail(
            f"{request.node.nodeid} drives a real tool but is not marked interop (@pytest.mark.interop)", pytrace=False
        )


@pytest.fixture
def observer() -> CountingObserver:
    return CountingObserver()


@pytest.fixture
async def engine(observer: CountingObserver) -> AsyncIterator[Engine]:
    """A running engine with one default application ``live`` and an idle timeout of 30 s."""
    async with Engine.builder().application(AppSpec("live")).idle_timeout(30).observer(observer).build() as eng:
        yield eng


# --- HTTP egress, HLS and recording (issue 4) ----------------------------------------------
# Self-contained: the imports are local so the fixtures above do not depend on them.


@pytest.fixture(scope="session")
def demo_frames() -> list:  # type: ignore[type-arg]
    """The frames of the bundled demo clip (10 s of H.264 + AAC, a keyframe every 2 s)."""
    from pathlib import Path

    import arcly_trio.server
    from arcly_trio.media import flv

    clip = Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"
    return flv.read_frames(clip.read_bytes())


@pytest.fixture
def http_get():  # type: ignore[no-untyped-def]
    """``await http_get(port, target, headers=(), method="GET", timeout=10)`` -> ``(status,
    headers, body)``.

    One request to 127.0.0.1 with the project's client (:func:`arcly_trio.clients.http.http_request`:
    any status, ``headers`` lower-cased into a dict, ``body`` bytes), with a ``fail_after(timeout)``
    around the whole exchange. It sends ``Host: 127.0.0.1`` unless ``headers`` has a ``Host`` of
    its own.
    """
    import trio

    from arcly_trio.clients.http import http_request

    async def get(port: int, target: str, headers=(), method: str = "GET", timeout: float = 10):  # type: ignore[no-untyped-def]
        host = [] if any(name.lower() == "host" for name, _ in headers) else [("host", "127.0.0.1")]
        with trio.fail_after(timeout):
            reply = await http_request(
                f"http://127.0.0.1:{port}{target}",
                method=method,
                headers=[*host, *headers],
                timeout=timeout,
                limit=1 << 30,
            )
        return tuple(reply)

    return get
