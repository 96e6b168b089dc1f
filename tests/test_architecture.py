"""Rules of the code base's shape that a reviewer should not have to count by hand."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wwaudit"
MAX_FUNCTION_LINES = 80


def _long_functions(source: str, filename: str) -> list[str]:
    """'file:line name (n lines)' for every function or method longer than the limit, nested ones too."""
    tree = ast.parse(source, filename)
    return [f"{filename}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_function_over_80_lines() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40  # the whole package is scanned, not an empty glob
    long = [hit for path in files for hit in _long_functions(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert not long, "split these functions (80 lines at most, decorators and docstring included):\n" + "\n".join(long)


def test_the_length_check_sees_long_and_nested_functions() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"def long():\n{body}\n\nclass C:\n    def method(self):\n        def inner():\n{body.replace('    ', '            ')}\n"
    hits = _long_functions(source, "m.py")
    assert [h.split()[1] for h in hits] == ["long", "method", "inner"]
    assert _long_functions("def short():\n    return 1\n", "m.py") == []
