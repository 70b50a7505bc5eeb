"""RELIABILITY.md cites tests by id: every cited test must exist, so the page cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cited() -> list[tuple[str, str | None]]:
    """(test file, function or None) for every citation; `::name` alone reuses the last file."""
    out, last = [], None
    for m in re.finditer(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`",
                         (ROOT / "RELIABILITY.md").read_text()):
        path, name = m.group(1) or last, m.group(2)
        if path:
            out.append((path, name))
            last = path
    return out


def test_every_cited_test_exists():
    refs = cited()
    assert len(refs) > 40
    missing = []
    for path, name in refs:
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
            continue
        if name:
            defs = {n.name for n in ast.walk(ast.parse(file.read_text()))
                    if isinstance(n, ast.FunctionDef)}
            if name not in defs:
                missing.append(f"{path}::{name}")
    assert missing == []
