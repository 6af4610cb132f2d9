"""arcly-trio: a live-media streaming kernel and server built on trio.

The kernel (:mod:`arcly_trio.kernel`) is re-exported here; the trio-free core (frames, keys,
errors) lives in :mod:`arcly_trio.core`, sans-IO media formats in :mod:`arcly_trio.media`, sans-IO
protocol cores in :mod:`arcly_trio.protocols`, protocol workers in :mod:`arcly_trio.workers`, the
command-line server in :mod:`arcly_trio.server` and property-testing helpers in
:mod:`arcly_trio.testing`.

The re-exports are lazy (PEP 562): ``import arcly_trio.media.flv`` loads no trio, and
``from arcly_trio import Engine`` loads the kernel only then. The errors (the root
:class:`~arcly_trio.core.errors.ArclyError` and its family) come from the trio-free core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from arcly_trio.kernel import *  # noqa: F403


def _kernel_names() -> list[str]:
    return list(importlib.import_module(".kernel", __name__).__all__)


def __getattr__(name: str) -> Any:
    if name == "__all__":  # ``from arcly_trio import *`` loads the kernel then
        return ["__version__", *_kernel_names()]
    if name.startswith("__"):
        raise AttributeError(name)
    errors = importlib.import_module(".core.errors", __name__)
    if name in errors.__all__:  # ``from arcly_trio import ArclyError`` loads no trio
        value = getattr(errors, name)
        globals()[name] = value
        return value
    kernel = importlib.import_module(".kernel", __name__)
    if name in kernel.__all__:
        value = getattr(kernel, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_kernel_names()})
