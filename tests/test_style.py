"""One style for every Python file: ``ruff check`` and ``ruff format --check`` find nothing.

The configuration is ``[tool.ruff]`` in ``pyproject.toml`` (line length 120, Python 3.11, imports
absolute and sorted). To apply it after an edit, from the repository root::

    .venv/bin/ruff check --fix arcly_trio tests examples benchmarks scripts
    .venv/bin/ruff format arcly_trio tests examples benchmarks scripts

Error policy: each test fails with ruff's own report, which names every file, line and rule.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["arcly_trio", "tests", "examples", "benchmarks", "scripts"]


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *CHECKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ruff_check_finds_nothing() -> None:
    result = ruff("check", "--no-cache", "--output-format", "concise")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_would_change_nothing() -> None:
    result = ruff("format", "--check", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
