"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by selenium, for the
browser tests.

:func:`chromium` starts a fresh browser with a throw-away profile and the flags that work as
root in a container; selenium's calls block, so tests run them with ``trio.to_thread``. A
missing browser, driver or selenium fails in CI and skips elsewhere (:mod:`tests._tools`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio

from tests._tools import require_selenium, require_tool

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
FAKE_MEDIA = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
)


@contextmanager
def chromium(*extra: str) -> Iterator[Any]:
    """A selenium ``webdriver.Chrome`` on Debian's Chromium, quit on exit."""
    browser = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    require_selenium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="arcly-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, *extra, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    _ordinary_scheduling()  # chromedriver and the browser inherit the policy
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
            _ordinary_scheduling()


def _ordinary_scheduling() -> None:
    """Put the test process back on the ordinary scheduler if something moved it to a realtime
    one: one CI run found it on SCHED_FIFO 99 after a Chromium test (cause not found), and every
    browser, server and ffmpeg it started afterwards inherited that and starved each other."""
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(os.getpid()) != os.SCHED_OTHER:
        os.sched_setscheduler(os.getpid(), os.SCHED_OTHER, os.sched_param(0))


T = TypeVar("T")


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


@contextlib.asynccontextmanager
async def browser(*flags: str) -> AsyncIterator[Any]:
    stack = contextlib.ExitStack()
    driver = await blocking(stack.enter_context, chromium(*flags))
    try:
        yield driver
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stack.close)
