"""One error story (``arcly_trio.core.errors``): every exception class of arcly-trio derives
from ``ArclyError``, and ``StreamError`` is the same class under its older name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import arcly_trio
from arcly_trio.core import errors
from arcly_trio.core.errors import ArclyError, ClientGone, PeerGone, StreamError


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in an arcly_trio module, private ones (``_Close``: a
    signal inside one module, never raised to a caller) left out."""
    found = []
    for info in pkgutil.walk_packages(arcly_trio.__path__, "arcly_trio."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found.append(value)
    return found


def test_every_exception_class_derives_from_the_root() -> None:
    classes = exception_classes()
    assert len(classes) > 40  # the walk found the family (core, media, protocols, workers...)
    strays = [f"{cls.__module__}.{cls.__qualname__}" for cls in classes if not issubclass(cls, ArclyError)]
    assert not strays, f"not an ArclyError: {strays}"


def test_stream_error_is_the_root_under_its_older_name() -> None:
    assert StreamError is ArclyError
    with pytest.raises(StreamError):
        raise ClientGone("went away")
    assert all(issubclass(getattr(errors, name), StreamError) for name in errors.__all__)


def test_client_gone_is_a_sibling_of_peer_gone() -> None:
    assert issubclass(ClientGone, ArclyError) and not issubclass(ClientGone, PeerGone)


def test_client_gone_is_still_importable_where_it_was() -> None:
    from arcly_trio.workers.http import ClientGone as from_package
    from arcly_trio.workers.http.exchange import ClientGone as from_exchange
    from arcly_trio.workers.http.server import ClientGone as from_server

    assert from_package is from_exchange is from_server is ClientGone


def test_the_package_exports_the_root_without_loading_the_kernel() -> None:
    script = (
        "import sys; from arcly_trio import ArclyError, StreamError; "
        "assert ArclyError is StreamError; assert 'trio' not in sys.modules; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
