"""CSV output: one row per layer with every metric column (spreadsheet-friendly)."""

from __future__ import annotations

import csv
import io

from wwaudit.auditor.results import AuditResult


def render(result: AuditResult, ctx: object = None) -> bytes:
    """One header row, then one row per layer entry (analysed and skipped)."""
    rows = [_flat(layer.to_dict()) for layer in result.layers]
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue().encode("utf-8")


def _flat(row: dict) -> dict:
    """Nested blocks (a layer's `reference` from --reference) become `block.key` columns."""
    out: dict = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            out[key] = value
    return out
