"""The comparison report (HTML or PDF) from a CompareResult: document, plots, rendering.

It shares the audit report's machinery (formats/report/): the templates and their jinja2
environment (html.template_html; autoescaped: names come from vendor files), the data:-only URL
fetcher of pdf.html_to_pdf, and the figure helpers and style of plots.py (fixed margins,
deterministic data: URIs, SVG for HTML, JPEG for PDF). Only its document and its three plots are
its own. Nothing here computes a metric; the plots draw the audits' eigenvalues and the numbers
of the result document.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from wwaudit.compare.result import CAVEAT, CompareResult, PairResult
from wwaudit.rules.findings import RULES, RULES_BY_ID
from wwaudit.errors import UsageError
from wwaudit.rules.findings import ALPHA_BAND, band_text
from wwaudit.formats import RenderContext
from wwaudit.formats.report.document import command_args, fmt, human_bytes, option_text, versions
from wwaudit.formats.report.plots import PLOT_STYLE, figure, figure_uri

LARGEST_CHANGES = 20  # rows of the "largest changes" table
ESD_LAYERS = 4  # layers whose overlaid ESDs are drawn
ESD_FLOOR = 1e-6  # overlaid ESDs show eigenvalues from λmax·ESD_FLOOR up
BASE_COLOUR = "#4a6fa5"
CANDIDATE_COLOUR = "#d1495b"


def change_order(pairs: list[PairResult]) -> list[PairResult]:
    """Pairs from the most to the least changed (relative distance; unreadable pairs first)."""

    def key(p: PairResult) -> tuple:
        return (p.status == "ok", -(p.relative_distance if p.relative_distance is not None else -1.0), p.base_id)

    return sorted(pairs, key=key)


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _alpha_plot(pairs: list[PairResult], image: str) -> str | None:
    """Both models' alpha per matched layer, in base graph order, over the default alpha band."""
    import matplotlib

    from wwaudit.formats.report.plots import BAND_COLOUR

    xs = list(range(len(pairs)))
    a = [p.base_metrics.get("alpha") for p in pairs]
    b = [p.candidate_metrics.get("alpha") for p in pairs]
    if all(v is None for v in a + b):
        return None
    with matplotlib.rc_context(PLOT_STYLE):
        fig, (ax,) = figure(7.0, 2.5)
        ax.axhspan(*ALPHA_BAND, color=BAND_COLOUR, zorder=0, label=band_text(ALPHA_BAND))
        for values, colour, label, marker in ((a, BASE_COLOUR, "base", "o"), (b, CANDIDATE_COLOUR, "candidate", "s")):
            arr = np.array([np.nan if v is None else min(float(v), 20.0) for v in values])
            ax.plot(xs, arr, color=colour, lw=0.9, marker=marker, ms=3, label=label)
        ax.set_ylabel("alpha")
        ax.set_xlabel("matched layer (base graph order)")
        _integer_ticks(ax)
        ax.legend(loc="upper left", frameon=False, ncols=3)
        return figure_uri(fig, image)


def _overlap_min(result: CompareResult) -> float:
    """CMP003's threshold as the policy in force set it (the dashed line of the overlap plot)."""
    rule = ((result.options.get("policy") or {}).get("rules") or {}).get("CMP003") or {}
    return float((rule.get("params") or {}).get("min_overlap", RULES_BY_ID["CMP003"].params["min_overlap"]))


def _change_plot(pairs: list[PairResult], image: str, overlap_min: float) -> str | None:
    """Relative distance and subspace overlap per matched layer: where the candidate moved."""
    import matplotlib

    if not pairs:
        return None
    xs = np.arange(len(pairs))
    dist = np.array([np.nan if p.relative_distance is None else p.relative_distance for p in pairs])
    overlap = np.array([np.nan if p.subspace_overlap is None else p.subspace_overlap for p in pairs])
    with matplotlib.rc_context(PLOT_STYLE):
        fig, (ax_d, ax_o) = figure(7.0, 2.3, ncols=2, bottom=0.42)
        ax_d.bar(xs, dist, color=CANDIDATE_COLOUR, width=0.8)
        ax_d.set_ylabel("‖W₂−W₁‖ / ‖W₁‖")
        ax_d.set_xlabel("matched layer")
        ax_o.bar(xs, overlap, color=BASE_COLOUR, width=0.8)
        ax_o.axhline(overlap_min, color=CANDIDATE_COLOUR, ls="--", lw=0.9)
        ax_o.set_ylim(0, 1.05)
        ax_o.set_ylabel("top-k subspace overlap")
        ax_o.set_xlabel("matched layer")
        _integer_ticks(ax_d)
        _integer_ticks(ax_o)
        return figure_uri(fig, image)


def _esd_plot(base_evals: Any, cand_evals: Any, image: str) -> str | None:
    """The two layers' ESDs (eigenvalues of WᵀW) overlaid on log-log axes."""
    import matplotlib
    from matplotlib.ticker import NullLocator

    a = np.asarray(base_evals if base_evals is not None else [], dtype=float)
    b = np.asarray(cand_evals if cand_evals is not None else [], dtype=float)
    a, b = a[np.isfinite(a) & (a > 0)], b[np.isfinite(b) & (b > 0)]
    if a.size < 2 or b.size < 2:
        return None
    hi = max(a.max(), b.max())
    # near-zero eigenvalues (rank loss) would stretch the axis over ten decades and flatten the tail
    lo = max(min(a.min(), b.min()), hi * ESD_FLOOR)
    a, b = a[a >= lo], b[b >= lo]
    bins = np.logspace(np.log10(lo), np.log10(hi) + 1e-9, 40)
    with matplotlib.rc_context(PLOT_STYLE):
        fig, (ax,) = figure(3.4, 2.3)
        for values, colour, label in ((a, BASE_COLOUR, "base"), (b, CANDIDATE_COLOUR, "candidate")):
            dens, _ = np.histogram(values, bins=bins, density=True)
            ax.stairs(np.where(dens > 0, dens, np.nan), bins, color=colour, lw=1.1, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("eigenvalue λ of WᵀW")
        ax.set_ylabel("density")
        ax.legend(loc="upper right", frameon=False)
        return figure_uri(fig, image)


def _model(info: Any) -> dict[str, str]:
    return {
        "path": info.path,
        "sha256": info.sha256,
        "size": human_bytes(info.size_bytes),
        "producer": f"{info.producer} {info.producer_version}".strip() or "unknown",
        "parameters": fmt(info.parameters),
    }


def _row(p: PairResult) -> dict[str, str]:
    shape = f"{p.N}×{p.M}" + (f"×{p.slices}" if p.slices and p.slices > 1 else "")
    return {
        "base": p.base,
        "candidate": p.candidate,
        "match": p.match,
        "shape": shape,
        "status": p.status,
        "reason": p.reason or "",
        "alpha_base": fmt(p.base_metrics.get("alpha")),
        "alpha_candidate": fmt(p.candidate_metrics.get("alpha")),
        "d_alpha": fmt(p.delta.get("alpha")),
        "d_lsn": fmt(p.delta.get("log_spectral_norm")),
        "d_log_norm": fmt(p.delta.get("log_norm")),
        "distance": fmt(p.relative_distance),
        "overlap": fmt(p.subspace_overlap),
        "k": str(p.subspace_k or "–"),
        "diff_rank": fmt(p.diff.get("rank")),
        "diff_alpha": fmt(p.diff.get("alpha")),
        "top_sv": fmt(p.top_sv_rel_change),
    }


def build_document(result: CompareResult, ctx: RenderContext, for_pdf: bool = False) -> dict[str, Any]:
    """Everything the compare template shows, as strings, small lists and data-URI images
    (SVG for the HTML report, JPEG for the PDF as in the audit report: plots.figure_uri says why)."""
    image = "jpeg" if for_pdf else "svg"
    ordered = change_order(result.pairs)
    base_layers = {layer.id: layer for layer in result.base.layers}
    cand_layers = {layer.id: layer for layer in result.candidate.layers}
    esds = []
    changed = [p for p in ordered if p.status == "ok" and (p.relative_distance or 0) > 0]
    for p in changed[:ESD_LAYERS]:
        uri = _esd_plot(base_layers[p.base_id].evals, cand_layers[p.candidate_id].evals, image)
        if uri:
            esds.append(
                {
                    "title": p.candidate if p.candidate == p.base else f"{p.base} → {p.candidate}",
                    "distance": fmt(p.relative_distance),
                    "overlap": fmt(p.subspace_overlap),
                    "uri": uri,
                }
            )
    titles = {rule.id: rule.title for rule in RULES}
    summary = result.summary()
    return {
        "title": f"wwaudit compare: {result.base.model.path} → {result.candidate.model.path}",
        "base": _model(result.base.model),
        "candidate": _model(result.candidate.model),
        "verdict": result.verdict,
        "verdict_reasons": result.verdict_reasons,
        "summary": {k: fmt(v) for k, v in summary.items()},
        "models": [
            {
                "label": r["label"],
                "base": fmt(r["base"]),
                "candidate": fmt(r["candidate"]),
                "delta": fmt(r["delta"]),
                "lower": r["lower"] or "–",
            }
            for r in result.model_metrics
        ],
        "caveat": CAVEAT,
        "findings": [
            {
                "rule": f.rule,
                "title": titles.get(f.rule, f.rule),
                "severity": f.severity,
                "layer": f.layer or "model",
                "message": f.message,
            }
            for f in result.findings
        ],
        "changes": [_row(p) for p in ordered[:LARGEST_CHANGES]],
        "more_pairs": max(0, len(ordered) - LARGEST_CHANGES),
        "unmatched_base": result.unmatched_base,
        "unmatched_candidate": result.unmatched_candidate,
        "alpha_plot": _alpha_plot(result.pairs, image),
        "change_plot": _change_plot(result.pairs, image, _overlap_min(result)),
        "esds": esds,
        "options": sorted((k, option_text(v, k)) for k, v in result.options.items()),
        "versions": versions(for_pdf),
        "short_hashes": (result.base.model.sha256[:12], result.candidate.model.sha256[:12]),
        "command": ctx.command,
        "command_args": command_args(ctx.command),
        "generated": ctx.generated,
        "page_size": ctx.page_size,
    }


def render_html(result: CompareResult, ctx: RenderContext, for_pdf: bool = False) -> str:
    """The comparison report as an HTML string (the PDF renderer prints this same document)."""
    from wwaudit.formats.report.html import template_html

    return template_html("compare.html.j2", build_document(result, ctx, for_pdf=for_pdf), for_pdf)


def render_pdf(result: CompareResult, ctx: RenderContext) -> bytes:
    """PDF bytes through WeasyPrint, fetching data: URLs only (the images are embedded)."""
    from wwaudit.formats.report.pdf import html_to_pdf

    identifier = (result.base.model.sha256[:16] + result.candidate.model.sha256[:16]).encode("ascii")
    return html_to_pdf(render_html(result, ctx, for_pdf=True), identifier)


def renderer(path: str) -> Callable[[CompareResult, RenderContext], bytes]:
    """The report renderer for a path's extension (.html/.htm or .pdf)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".html", ".htm"):
        return lambda result, ctx: render_html(result, ctx).encode("utf-8")
    if ext == ".pdf":
        return render_pdf
    raise UsageError(f"--report {path}: unknown report extension '{ext}' (use .html or .pdf)")
