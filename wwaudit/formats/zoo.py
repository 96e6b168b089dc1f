"""The summary of an audit of several models (`--out-dir`): one row per model, as CSV, HTML or PDF.

Why a separate summary: a reviewer of forty variants reads one table first (verdict, α̂, mean α,
findings, time) and opens a model's own JSON or report only where a row asks for it. A model that
could not be audited is a row with verdict `error` and the reason, never a missing line.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any

from wwaudit.formats import RenderContext
from wwaudit.formats.csv_format import _cell
from wwaudit.records import ZooEntry

COLUMNS = ("model", "path", "verdict", "alpha_hat", "alpha_mean", "findings", "rules", "layers", "analysed", "seconds", "reason")


def _rules(entry: ZooEntry) -> str:
    """The rules that fired, with how many times: 'WW003×2 WW010'."""
    if entry.result is None:
        return ""
    counts = Counter(f.rule for f in entry.result.findings)
    return " ".join(f"{rule}×{n}" if n > 1 else rule for rule, n in sorted(counts.items()))


def zoo_rows(entries: list[ZooEntry]) -> list[dict[str, Any]]:
    """One dict per model with the COLUMNS (None where a model has no value)."""
    rows = []
    for entry in entries:
        summary = entry.result.summary if entry.result is not None else {}
        reasons = entry.result.verdict_reasons if entry.result is not None else []
        rows.append(
            {
                "model": entry.name,
                "path": entry.path,
                "verdict": entry.verdict,
                "alpha_hat": summary.get("alpha_weighted_mean"),
                "alpha_mean": summary.get("alpha_mean"),
                "findings": summary.get("findings"),
                "rules": _rules(entry),
                "layers": summary.get("layers"),
                "analysed": summary.get("analysed"),
                "seconds": round(entry.seconds, 3),
                "reason": entry.error if entry.error is not None else "; ".join(reasons),
            }
        )
    return rows


def render_csv(entries: list[ZooEntry]) -> bytes:
    """The summary as CSV (text cells escaped against spreadsheet formulas, as csv_format)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in zoo_rows(entries):
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue().encode("utf-8")


def _document(entries: list[ZooEntry], ctx: RenderContext) -> dict[str, Any]:
    verdicts = Counter(e.verdict for e in entries)
    return {
        "title": f"wwaudit: {len(entries)} models",
        "rows": zoo_rows(entries),
        "verdicts": [(v, verdicts[v]) for v in ("error", "fail", "inconclusive", "review", "pass") if verdicts[v]],
        "worst": ctx.extra.get("worst", ""),
        "command": ctx.command,
        "generated": ctx.generated,
        "page_size": ctx.page_size,
        "version": ctx.extra.get("version", ""),
    }


def render_html(entries: list[ZooEntry], ctx: RenderContext, for_pdf: bool = False) -> str:
    """The summary page (self-contained HTML, the reports' style sheet)."""
    from wwaudit.formats.report.html import environment

    return environment().get_template("zoo.html.j2").render(doc=_document(entries, ctx), for_pdf=for_pdf)


def render_pdf(entries: list[ZooEntry], ctx: RenderContext) -> bytes:
    """The summary page printed to PDF (fixed identifier: the same rows give the same document)."""
    from wwaudit.formats.report.pdf import html_to_pdf

    return html_to_pdf(render_html(entries, ctx, for_pdf=True), b"wwaudit-zoo-summary")
