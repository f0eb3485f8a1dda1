"""The code's shape, as the README's Layout promises it: small functions and modules, one format."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted([*(ROOT / "csm").glob("*.py"), *(ROOT / "studio").rglob("*.py"), ROOT / "app.py"])
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def test_app_py_is_a_thin_entry_point():
    assert len((ROOT / "app.py").read_text().splitlines()) <= 60


@pytest.mark.parametrize("path", PACKAGES, ids=[str(p.relative_to(ROOT)) for p in PACKAGES])
def test_no_function_over_60_lines_and_no_module_over_400(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_the_code_is_formatted_with_the_committed_settings():
    pytest.importorskip("ruff", reason="ruff (requirements.txt) is not installed")
    run = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True,
                         text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
