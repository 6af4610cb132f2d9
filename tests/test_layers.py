"""The architecture, checked: imports go only downward, no module circle (type-only imports
included), no private name reached across modules, sans-IO loads no trio.

The layers (README "Layout"), lowest first; a package may import from its own layer's packages
as listed and from every lower one:

0. ``core``: frames, keys, errors, budgets (trio-free)
1. ``media``: sans-IO media formats (FLV, AMF0, MPEG-TS, fMP4, HLS, codecs, the probe)
2. ``protocols``: sans-IO protocol cores (RTMP, HTTP routing, WebSocket checks, frames API)
3. ``kernel``: the engine (trio)
4. ``storage``, then ``services`` (per-stream services, which use storage), then ``ops``
   (running it for real: HTTP hooks, signed URLs, composite authenticators, Prometheus metrics,
   the audit log, storage health checks; on the kernel and the services)
   ``transport``: trio's transport errors mapped to ours (on ``core`` only), for every layer
   above that talks to a peer
5. ``workers`` and ``clients`` (trio adapters on sockets; independent of each other)
6. ``relay`` (push and pull relays, on the clients), then ``cluster`` (directories, nodes)
7. ``server``: the command line, the demo, the supervisor of ``--workers``
8. ``testing``: helpers for users' property tests (may use anything)

Type-only imports (under ``if TYPE_CHECKING:``) count for the layering too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "arcly_trio"

#: What each top-level package may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "media": {"core"},
    "protocols": {"core", "media"},
    "kernel": {"core", "media"},
    "storage": {"core"},
    "services": {"core", "media", "protocols", "kernel", "storage"},
    "transport": {"core"},
    "ops": {"core", "media", "protocols", "kernel", "storage", "services", "transport"},
    "workers": {"core", "media", "protocols", "kernel", "transport"},
    "clients": {"core", "media", "protocols", "transport"},
    "relay": {"core", "media", "protocols", "kernel", "storage", "services", "clients", "transport"},
    "cluster": {"core", "media", "protocols", "kernel", "storage", "services", "clients", "relay", "transport"},
    "server": {
        "core",
        "media",
        "protocols",
        "kernel",
        "storage",
        "services",
        "ops",
        "workers",
        "clients",
        "relay",
        "cluster",
        "transport",
    },
    "testing": {
        "core",
        "media",
        "protocols",
        "kernel",
        "storage",
        "services",
        "ops",
        "workers",
        "clients",
        "relay",
        "cluster",
        "server",
        "transport",
    },
}
SANS_IO = ("core", "media", "protocols")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """The arcly_trio modules ``name`` imports, and whether each import is type-only."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                type_only.add(id(inner))
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module]
            if module and not node.module or node.module is None:
                targets = [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            if target == "arcly_trio" or target.startswith("arcly_trio."):
                out.append((target, id(node) in type_only))
    return out


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_only_go_down_the_layers() -> None:
    wrong = []
    for name, path in modules().items():
        mine = layer_of(name)
        if not mine or mine not in ALLOWED:
            continue
        for target, _ in imports(name, path):
            theirs = layer_of(target)
            if theirs and theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{name} imports {target} ({mine} -> {theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_back_in_a_circle() -> None:
    graph: dict[str, set[str]] = {}
    names = modules()
    for name, path in names.items():
        edges = set()
        for target, _ in imports(name, path):  # type-only imports too: a circle of types is one
            while target and target not in names:  # "pkg.mod.Name" -> "pkg.mod"
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node) :] + [node])
            return
        visiting.append(node)
        for nxt in graph.get(node, ()):
            if not nxt.startswith(node + "."):  # a package importing its own submodules
                visit(nxt)
        visiting.pop()
        done.add(node)

    for node in graph:
        visit(node)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


#: Private names reached across modules on purpose, by (module, name): argparse has no public way
#: to walk a parser's options (the TOML config and the CLI's help map them), and the engine's
#: publisher limit that a reload changes (to be given a public setter with the typed settings).
PRIVATE_ALLOWED: set[tuple[str, str]] = {
    ("arcly_trio.server.config", "_actions"),
    ("arcly_trio.server.config", "_AppendAction"),
    ("arcly_trio.server.config", "_StoreTrueAction"),
    ("arcly_trio.server.config", "_StoreFalseAction"),
    ("arcly_trio.server.config", "_SubParsersAction"),
    # pylibsrtp's libsrtp session, for srtp_protect in place on the WHEP hot path (with a fallback)
    ("arcly_trio.protocols.webrtc.srtp", "_srtp"),
}
#: Not checked here (none today).
PRIVATE_UNCHECKED: tuple[str, ...] = ()
_PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make"}  # namedtuple's API


def _private(name: str) -> bool:
    return (
        name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in _PUBLIC_UNDERSCORE
    )


def _defined_here(tree: ast.Module) -> set[str]:
    """The names a module defines: its functions and classes, names it assigns, what it assigns
    on ``self``/``cls``, and ``__slots__`` strings. A private one of these is the module's own."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            own.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _private(node.value):
            own.add(node.value)
    return own


def private_reaches(name: str, path: Path, names: dict[str, Path]) -> list[tuple[str, int, str]]:
    """Where module ``name`` reads or sets another module's private name (``x._y`` with a ``_y``
    this module does not define, on anything but ``self``/``cls``), or imports one (``from
    arcly_trio.m import _y``; a package's own private submodules may be imported within it)."""
    tree = ast.parse(path.read_text())
    own = _defined_here(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr not in own:
                found.append((name, node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module != "arcly_trio" and not module.startswith("arcly_trio."):
                continue
            for alias in node.names:
                if _private(alias.name) and not (module == package and f"{module}.{alias.name}" in names):
                    found.append((name, node.lineno, alias.name))
    return found


def test_no_private_name_is_reached_across_modules() -> None:
    names = modules()
    wrong = []
    for name, path in names.items():
        if name.startswith(PRIVATE_UNCHECKED):
            continue
        for module, line, attribute in private_reaches(name, path, names):
            if (module, attribute) not in PRIVATE_ALLOWED:
                wrong.append(f"{module}:{line}: {attribute}")
    assert not wrong, "\n".join(wrong)


def test_the_private_name_check_sees_a_reach(tmp_path: Path) -> None:
    path = tmp_path / "example.py"
    path.write_text(
        "from arcly_trio.kernel.engine import _MAX_FAILURE_KINDS\n"
        "from . import _hls_held\n\n\n"
        "class Mine:\n    def __init__(self):\n        self._mine = 1\n\n\n"
        "def f(x, other):\n    return x._hidden, other._mine\n"
    )
    found = private_reaches("arcly_trio.services.example", path, modules())
    assert [(line, attribute) for _, line, attribute in found] == [(1, "_MAX_FAILURE_KINDS"), (11, "_hidden")]


def test_sans_io_modules_load_no_trio() -> None:
    """Each sans-IO module, imported in a fresh interpreter, leaves trio unloaded."""
    targets = [name for name in modules() if layer_of(name) in SANS_IO]
    assert len(targets) > 20
    script = (
        "import importlib, sys\n"
        f"for name in {targets!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'trio' not in sys.modules, f'importing {name} loads trio'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
