"""The documentation holds together: links, anchors, and the modules the architecture names.

* Every relative link of ``README.md`` and ``docs/*.md`` (``[text](path)``, ``[text](path#anchor)``,
  ``[text](#anchor)``, images too) names a file or folder that exists, and every ``#anchor``
  names a heading of the page it points to, spelled as GitHub spells heading anchors.
* Every module ``docs/architecture.md`` names exists: ``arcly_trio/...`` paths, paths written
  from the package (``kernel/gate.py``, ``media/fmp4/``), and dotted names
  (``arcly_trio.kernel.fanout.Fanout``: the module, and the name defined in it).

Error policy: each test collects every problem and fails once, listing them all.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "arcly_trio"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
TOP_PACKAGES = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists())


def prose(text: str) -> str:
    """The text without its fenced code blocks (a ``[x](y)`` in code is not a link)."""
    return FENCE.sub("", text)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation dropped, spaces to ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown page (a repeated heading gets ``-1``, ``-2``... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(path.read_text())):
        base = anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_anchor_spelling_is_githubs() -> None:
    assert anchor("HLS and DASH players: sessions") == "hls-and-dash-players-sessions"
    assert anchor("### `arcly-trio serve`".lstrip("# ")) == "arcly-trio-serve"
    assert (
        anchor("All cores: `--workers 2` against one worker (`benchmarks/workers.py`)")
        == "all-cores---workers-2-against-one-worker-benchmarksworkerspy"
    )


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for document in DOCUMENTS:
        for target in LINK.findall(prose(document.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:...
                continue
            path_part, _, fragment = target.partition("#")
            path = (document.parent / path_part).resolve() if path_part else document
            where = f"{document.relative_to(ROOT)}: ({target})"
            if not path.exists():
                broken.append(f"{where}: no such file")
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                broken.append(f"{where}: no heading #{fragment} in {path.relative_to(ROOT)}")
    assert broken == []


def defined_names(module: Path) -> set[str]:
    """The names a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def module_file(parts: list[str]) -> Path | None:
    """The file of the module ``arcly_trio.<parts>``, or None."""
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def missing_dotted(name: str) -> str | None:
    """Why the dotted name ``arcly_trio.a.b.C`` does not exist, or None if it does."""
    parts = name.split(".")[1:]
    for length in range(len(parts), -1, -1):
        module = module_file(parts[:length]) if length else PACKAGE / "__init__.py"
        if module is None:
            continue
        rest = parts[length:]
        if rest and rest[0] not in defined_names(module):
            return f"{name}: {module.relative_to(ROOT)} defines no {rest[0]}"
        return None
    return f"{name}: no such module"


def test_every_module_the_architecture_names_exists() -> None:
    text = ARCHITECTURE.read_text()
    missing = []
    for path in set(re.findall(r"(?<![\w/.])arcly_trio/([\w./-]*\w/?)", text)):
        if not (PACKAGE / path).exists():
            missing.append(f"arcly_trio/{path}")
    short = re.compile(rf"(?<![\w/.-])((?:{'|'.join(TOP_PACKAGES)})/(?:[\w.-]*\w/?)*)")
    for path in set(short.findall(text)):
        if not (PACKAGE / path).exists():
            missing.append(f"{path} (arcly_trio/{path})")
    for name in set(re.findall(r"(?<![\w/.])arcly_trio(?:\.\w+)+", text)):
        why = missing_dotted(name)
        if why:
            missing.append(why)
    assert sorted(missing) == []
