"""`wwaudit describe` as text or JSON: renders the inventory's dict (engine.describe), computes nothing."""

from __future__ import annotations

import json
from typing import Any


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    return f"{nbytes} B"


def render_json(inventory: dict[str, Any]) -> bytes:
    """Deterministic JSON (schema wwaudit-describe/1): no dates, no timings."""
    return (json.dumps(inventory, indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")


def render_text(inventory: dict[str, Any]) -> str:
    """One line per tensor (analysed: its matrices; not: why), then the totals."""
    model = inventory["model"]
    lines = [f"{model['path']} ({model['format']})"]
    rows = []
    for t in inventory["tensors"]:
        what = f"{t['kind']} {t['N']}x{t['M']}" + (f" x{t['slices']}" if t["slices"] and t["slices"] > 1 else "")
        rows.append(
            (
                str(t["id"]),
                t["name"],
                t["op"] or "-",
                "x".join(str(d) for d in t["shape"]) or "scalar",
                t["dtype"],
                _size(t["bytes"]),
                what if t["analysed"] else f"skipped: {t['reason']}",
            )
        )
    header = ("id", "name", "op", "shape", "dtype", "bytes", "analysis")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:6])) + "  " + row[6])
    lines.append(
        f"{model['tensors']} tensors, {model['parameters']:,} parameters, {_size(model['stored_bytes'])} stored; "
        f"{model['analysable']} of {model['layers']} layers analysable"
    )
    if model.get("unlisted_skipped"):
        lines.append(f"{model['unlisted_skipped']} more skipped non-weight tensors not listed")
    return "\n".join(lines) + "\n"
