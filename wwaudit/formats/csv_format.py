"""CSV output: one row per layer with every metric column (spreadsheet-friendly).

Layer names, tensor names and reasons come from the vendor's file, and a spreadsheet runs a cell
that starts with '=', '+', '-' or '@' as a formula (CSV injection): such text cells get a leading
apostrophe, which spreadsheets show as text and do not display. Numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io

from wwaudit.records import AuditResult, flat_row


def render(result: AuditResult, ctx: object = None) -> bytes:
    """One header row, then one row per layer entry (analysed and skipped)."""
    rows = [flat_row(layer.to_dict()) for layer in result.layers]
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue().encode("utf-8")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A CSV cell: lists joined with ';', None empty (also inside a list), text that a spreadsheet would evaluate
    escaped with a leading apostrophe (OWASP's advice for CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = ";".join("" if item is None else str(item) for item in value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
