"""Rules of the code base's shape that a reviewer should not have to count by hand."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wwaudit"
MAX_FUNCTION_LINES = 80


def _long_functions(source: str, filename: str) -> list[str]:
    """'file:line name (n lines)' for every function or method longer than the limit, nested ones too."""
    tree = ast.parse(source, filename)
    return [
        f"{filename}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_over_80_lines() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40  # the whole package is scanned, not an empty glob
    long = [hit for path in files for hit in _long_functions(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert not long, "split these functions (80 lines at most, decorators and docstring included):\n" + "\n".join(long)


def test_the_length_check_sees_long_and_nested_functions() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = (
        f"def long():\n{body}\n\nclass C:\n    def method(self):\n        def inner():\n{body.replace('    ', '            ')}\n"
    )
    hits = _long_functions(source, "m.py")
    assert [h.split()[1] for h in hits] == ["long", "method", "inner"]
    assert _long_functions("def short():\n    return 1\n", "m.py") == []


def _cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative): import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        work = [(root, iter(sorted(imports.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_circles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_has_no_circle() -> None:
    """No module imports one that (directly or not) imports it back, lazy and TYPE_CHECKING
    imports included: the stages read top to bottom (setup.cfg [importlinter] holds the layers)."""
    import sys

    import pytest

    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(PACKAGE.parent))
    try:
        graph = grimp.build_graph("wwaudit", cache_dir=None)
    finally:
        sys.path.remove(str(PACKAGE.parent))
    imports = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert len(imports) > 40 and any(imports.values())
    assert _cycles(imports) == []
