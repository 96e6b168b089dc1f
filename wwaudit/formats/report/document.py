"""The report's document model: what every report format shows, already formatted as text.

Built from an AuditResult (no metric is computed here); HTML and PDF render this same model so
they cannot drift apart. Tests check this model as well as the rendered files.
"""

from __future__ import annotations

import json
import platform
import unicodedata
from contextlib import ExitStack
from importlib import metadata
from typing import Any

import numpy as np

import wwaudit
from wwaudit.rules.findings import RULES_BY_ID, alpha_band, band_text
from wwaudit.layer_metrics import DETAIL_METRICS as LAYER_DETAIL
from wwaudit.layer_metrics import TABLE_METRICS
from wwaudit.records import AuditResult, Finding, LayerResult
from wwaudit.formats import RenderContext

PLOT_MODES = ("findings", "all", "none")

# (metric key, column label, tooltip); the layer table shows these after the identity columns.
# Tooltips may name the alpha band as {band}: build_document fills in the policy's.
METRIC_TABLE: tuple[tuple[str, str, str], ...] = tuple((m.name, m.label, m.description) for m in TABLE_METRICS)

# Per-layer metrics shown next to each layer's plots.
DETAIL_METRICS: tuple[tuple[str, str], ...] = tuple((m.name, m.detail_label or m.label) for m in LAYER_DETAIL)

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}

# Relative column widths of the HTML layer table (fixed widths: stable while it is sorted and filtered).
_COLUMN_WEIGHTS = {
    "id": 4.2,
    "name": 13.5,
    "log_norm": 6.3,
    "op": 7,
    "shape": 9,
    "quantization": 10,
    "status": 6.3,
    "stable_rank": 6.3,
    "rank_loss": 4.6,
    "num_spikes": 5.4,
    "num_traps": 5.0,
    "phase": 7.5,
    "findings": 7.5,
}
_METRIC_WEIGHT = 5.8
_SPANNED = {key for key, _label, _tip in METRIC_TABLE} | {"phase"}

# The PDF prints the layer table as a listing: per row a '#' cell, a name cell and ONE cell of
# fixed-width fields in a monospace font, on landscape pages. Why: WeasyPrint spends ~1 ms on every
# table cell (style, boxes, line layout, drawing), so a 150-layer table of 16 cells took 2.1 s, the
# largest part of a PDF report; as a listing it takes about 0.5 s and shows the same values.
_LISTING_GAP = "  "
_MONO_ADVANCE = 0.602  # advance width of every DejaVu Sans Mono glyph, in em
# text width of the fields column on a landscape page, in pt: 74% (report.css) of the content
# width that report.css's 13 mm side margins leave (A4: 271 mm, Letter: 253.4 mm), less the
# cell's 3 px padding on each side
_LISTING_FIELDS_PT = {size: 0.74 * mm * 72 / 25.4 - 4.5 for size, mm in (("A4", 271.0), ("Letter", 253.4))}
_LISTING_FONT_PT = (5.0, 6.5)  # smallest and largest font size of the fields
# labels the monospace face cannot show as in the table: its combining hat does not sit on the α
_LISTING_LABELS = {"alpha_weighted": "α-hat"}


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers as a reviewer reads them; '–' for not applicable."""
    if value is None:
        return "–"
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not np.isfinite(value):
        return "–"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}" if abs(value) >= 100 else f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"


def sort_key(value: Any) -> str:
    """A machine-readable cell value for the HTML table's sort script ('' sorts last)."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value)) if np.isfinite(float(value)) else ""
    return str(value)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def layer_class(layer: LayerResult, findings: list[Finding]) -> str:
    """The colour class of a layer: its worst finding, else its status."""
    if layer.status == "error" or any(f.severity == "error" for f in findings):
        return "error"
    if any(f.severity == "warning" for f in findings):
        return "warning"
    if layer.status in ("skipped", "fit_failed"):
        return layer.status
    if findings:
        return "info"
    return "ok"


def _shape(layer: LayerResult) -> str:
    if layer.N:
        return f"{layer.N}×{layer.M}" + (f"×{layer.slices}" if layer.slices and layer.slices > 1 else "")
    return "×".join(map(str, layer.shape or [])) or "scalar"


def build_document(
    result: AuditResult, ctx: RenderContext, for_pdf: bool = False, plots_until: ExitStack | None = None
) -> dict[str, Any]:
    """Everything the templates show, as strings and small lists (plots as data: URIs).

    With `plots_until`, the plots are still being drawn when this returns: their entries are
    ``wwaudit-plot:`` URLs, ``doc["plot_source"].fetch(url)`` gives their bytes, and the drawing
    stops when that stack closes (the PDF renderer overlaps it with WeasyPrint's work).
    """
    if ctx.plots not in PLOT_MODES:
        raise ValueError(f"plots mode {ctx.plots!r} is not one of {PLOT_MODES}")
    by_layer = _findings_by_layer(result.findings)
    band = alpha_band(result.options.get("policy"))
    columns = _table_columns(result)
    plotted, with_sections = _plotted_layers(result.layers, by_layer, ctx.plots, ctx.max_plots)
    rows = [_table_row(layer, by_layer.get(layer.id, []), columns) for layer in result.layers]
    weight_rows = [row for row in rows if not row["non_weight"]]
    renderer, model_plots, layer_plots = _draw_plots(result, by_layer, plotted, ctx, for_pdf, plots_until, band)
    details = [
        _detail(layer, by_layer.get(layer.id, []), layer_plots.get(str(layer.id)), for_pdf)
        for layer in result.layers
        if layer.id in plotted
    ]
    return {
        "title": f"wwaudit report: {result.model.path}",
        "model": _model_block(result.model),
        "verdict": result.verdict,
        "verdict_reasons": result.verdict_reasons,
        "gate_note": gate_note(result),
        "reliability": RELIABILITY,
        "summary": _key_metrics(result, band),
        "alpha_band": {"text": band_text(band), "low": f"{band[0]:g}", "high": f"{band[1]:g}"},
        "counts": {sev: sum(1 for f in result.findings if f.severity == sev) for sev in ("error", "warning", "info")},
        "columns": [
            (key, label, numeric, _tooltip(key, band), width)
            for (key, label, numeric), width in zip(columns, _column_widths([key for key, _label, _numeric in columns]))
        ],
        "layers": rows,
        "listing": _listing(columns, weight_rows, ctx.page_size) if for_pdf else None,
        "weight_rows": weight_rows,
        "non_weights": _non_weight_groups(rows),
        # the PDF's map shows the weight entries, the rows of its listing (the others have no row to
        # link to there, and their cells cost a tenth of the PDF's layout on a 200-entry detector)
        "layer_map": [
            {"id": r["id"], "anchor": r["anchor"], "cls": r["cls"], "name": r["name"]} for r in (weight_rows if for_pdf else rows)
        ],
        "map_left_out": len(rows) - len(weight_rows) if for_pdf else 0,
        "legend": [
            (cls, text)
            for cls, text in (
                ("ok", "no finding"),
                ("info", "info finding"),
                ("warning", "warning"),
                ("error", "error or unreadable"),
                ("fit_failed", "power-law fit failed"),
                ("skipped", "skipped"),
            )
        ],
        "model_plots": model_plots,
        "plot_source": renderer if plots_until is not None else None,
        "details": details,
        "shared_key": _shared_key(result, plotted) if for_pdf else [],
        "plots_mode": ctx.plots,
        "unplotted": with_sections - len(plotted),
        "findings": _finding_groups(result.findings),
        "waived": _waived(result),
        "options": [(k, option_text(v, k)) for k, v in sorted(result.options.items()) if k != "policy"],
        "policy": _policy_block(result.options.get("policy")),
        "command_args": command_args(ctx.command),
        "versions": versions(for_pdf),
        "timings": [(k, f"{v:.2f} s") for k, v in sorted(result.timings.items()) if isinstance(v, (int, float))],
        "command": ctx.command,
        "generated": ctx.generated,
        "page_size": ctx.page_size,
        "wwaudit_version": wwaudit.__version__,
    }


def _findings_by_layer(findings: list[Finding]) -> dict[int, list[Finding]]:
    by_layer: dict[int, list[Finding]] = {}
    for f in findings:
        if f.layer_id is not None:
            by_layer.setdefault(f.layer_id, []).append(f)
    return by_layer


def _table_columns(result: AuditResult) -> list[tuple[str, str, bool]]:
    """(key, label, numeric) of the layer table; quantization and phase only when some layer has one."""
    columns = [("id", "#", True), ("name", "layer", False), ("op", "op", False), ("shape", "shape", False)]
    if any(layer.quantization for layer in result.layers):
        columns.append(("quantization", "quantization", False))
    columns.append(("status", "status", False))
    columns += [(key, label, True) for key, label, _tip in METRIC_TABLE]
    if any(layer.metric("phase") is not None for layer in result.layers):
        columns.append(("phase", "phase", False))
    columns.append(("findings", "findings", False))
    return columns


def _table_row(layer: LayerResult, found: list[Finding], columns: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """One row of the layer table: each cell as (key, text, sort key, numeric, spanned)."""
    rules = sorted({f.rule for f in found})
    cells = {
        "id": (str(layer.id), sort_key(layer.id)),
        "name": (layer.name, layer.name),
        "op": (layer.op or "–", layer.op or ""),
        "shape": (_shape(layer), sort_key((layer.N or 0) * (layer.M or 0) * (layer.slices or 1))),
        "quantization": (layer.quantization or "–", layer.quantization or ""),
        "status": (layer.status, layer.status),
        "phase": (fmt(layer.metric("phase")), sort_key(layer.metric("phase"))),
        "findings": (" ".join(rules) or "–", " ".join(rules)),
    }
    for key, _label, _tip in METRIC_TABLE:
        cells[key] = (fmt(layer.metric(key)), sort_key(layer.metric(key)))
    # a layer without metrics shows its reason across the metric columns instead of a row of dashes
    metric_keys = [key for key, _label, _numeric in columns if key in _SPANNED]
    return {
        "id": layer.id,
        "anchor": f"layer-{layer.id}",
        "cls": layer_class(layer, found),
        "status": layer.status,
        "reason": layer.reason or "",
        "name": layer.name,
        "analysed": layer.analysed,
        "notes": list(layer.notes),
        "non_weight": non_weight_group(layer),
        "span": len(metric_keys),
        "first_metric": metric_keys[0],
        "cells": [(key, cells[key][0], cells[key][1], numeric, key in _SPANNED) for key, _label, numeric in columns],
    }


def _draw_plots(
    result: AuditResult,
    by_layer: dict[int, list[Finding]],
    plotted: set[int],
    ctx: RenderContext,
    for_pdf: bool,
    plots_until: ExitStack | None,
    band: tuple[float, float],
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Start the model plots (alpha and norm by depth) and the plotted layers' ESD plots: drawn
    here, or left drawing until `plots_until` closes. Returns (renderer, model plots, layer plots)."""
    from wwaudit.formats.report import plots

    points: list[Any] = []
    jobs: list[Any] = []
    for layer in result.layers:
        if not layer.analysed:
            continue
        lo, hi = layer.metric("alpha_ci_low"), layer.metric("alpha_ci_high")
        points.append(
            plots.DepthPoint(
                # evenly spaced analysed layers, not file entries: biases and skipped tensors would
                # otherwise stretch the axis (202 entries for 63 layers on a detector); labelled with
                # the '#' the tables and the layer map use, so a point can be looked up
                position=len(points),
                label=str(layer.id),
                status=layer_class(layer, by_layer.get(layer.id, [])),
                alpha=layer.metric("alpha") if layer.status == "ok" else None,
                alpha_ci=(float(lo), float(hi)) if lo is not None and hi is not None else None,
                log_spectral_norm=layer.metric("log_spectral_norm"),
            )
        )
        if layer.id in plotted and layer.evals is not None:
            jobs.append(
                plots.LayerPlotJob(
                    key=str(layer.id),
                    evals=np.asarray(layer.evals),
                    random_evals=None if layer.random_evals is None else np.asarray(layer.random_evals),
                    metrics={k: layer.metric(k) for k in plots.PLOT_METRICS},
                    fmt="jpeg" if for_pdf else "svg",
                    legend=False,  # printed under the figure as text: _detail's "key"
                )
            )
    renderer = plots.PlotRenderer(
        points,
        jobs,
        fmt="jpeg" if for_pdf else "svg",
        workers=ctx.extra.get("workers"),
        deferred=plots_until is not None,
        band=band,
    )
    if plots_until is None:
        with renderer:
            return renderer, renderer.model_plots(), renderer.uris()
    plots_until.enter_context(renderer)
    model_plots = {name: renderer.model_url(name) for name in plots.MODEL_PLOT_NAMES}
    return renderer, model_plots, {job.key: renderer.url(job.key) for job in jobs}


def _detail(layer: LayerResult, found: list[Finding], uri: str | None, for_pdf: bool) -> dict[str, Any]:
    """A plotted layer's section: identity, metrics, findings and its ESD plot (and its plot's key,
    except in the PDF, which prints one shared key)."""
    return {
        "id": layer.id,
        "anchor": f"layer-{layer.id}",
        "name": layer.name,
        "tensor": layer.tensor,
        "op": layer.op,
        "shape": _shape(layer),
        "dtype": layer.dtype or "",
        "quantization": layer.quantization,
        "status": layer.status,
        "reason": layer.reason or "",
        "cls": layer_class(layer, found),
        "notes": list(layer.notes),
        "metrics": [(label, fmt(layer.metric(key))) for key, label in DETAIL_METRICS if layer.metric(key) is not None],
        "findings": [{"rule": f.rule, "severity": f.severity, "message": _without_layer(f)} for f in found],
        "plot": uri,
        "key": _plot_key(layer) if uri and not for_pdf else [],
        "no_plot": ""
        if uri
        else ("no eigenvalues (layer not analysed)" if not layer.analysed else "no eigenvalues kept for this layer"),
    }


def _plot_key(layer: LayerResult) -> list[dict[str, Any]]:
    """The legend of a layer plot's two panels, as text under the figure (plots.plot_key)."""
    from wwaudit.formats.report.plots import PLOT_METRICS, plot_key

    shuffled = layer.random_evals is not None and np.any(np.asarray(layer.random_evals) > 0)
    panels = plot_key({k: layer.metric(k) for k in PLOT_METRICS}, shuffled=bool(shuffled))
    return [{"side": side, "entries": entries} for side, entries in zip(("left", "right"), panels)]


def _shared_key(result: AuditResult, plotted: set[int]) -> list[dict[str, Any]]:
    """The PDF's one key for all its layer plots (plots.shared_key)."""
    from wwaudit.formats.report.plots import shared_key

    shuffled = any(
        layer.random_evals is not None and np.any(np.asarray(layer.random_evals) > 0)
        for layer in result.layers
        if layer.id in plotted
    )
    return [{"side": side, "entries": entries} for side, entries in zip(("left", "right"), shared_key(shuffled))]


def _model_block(model: Any) -> dict[str, str]:
    """The report's identity block of the audited file."""
    return {
        "path": model.path,
        "sha256": model.sha256,
        "short_hash": model.sha256[:16],
        "size": human_bytes(model.size_bytes),
        "producer": f"{model.producer} {model.producer_version}".strip() or "unknown",
        "opset": ", ".join(f"{d} {v}" for d, v in sorted(model.opset.items())) or "none",
        "parameters": fmt(model.parameters),
        "ir_version": str(model.ir_version),
        "graph_name": model.graph_name,
        "external_data": "yes" if model.external_data else "no",
    }


def _waived(result: AuditResult) -> list[dict[str, Any]]:
    """Findings the policy or the baseline waived, with who waived them and why."""
    return [
        {
            "rule": f.rule,
            "severity": f.severity,
            "layer": f.layer or "model",
            "message": f.message,
            "by": ": ".join(x for x in (getattr(f, "suppressed_by", None) or "policy", getattr(f, "justification", None)) if x),
        }
        for f in getattr(result, "suppressed", [])
    ]


# Options whose values are byte counts: shown as KiB/MiB/GiB, as a reader sets them (--max-memory 8G).
_BYTE_OPTIONS = ("max_memory",)


def option_text(value: Any, key: str = "") -> str:
    """Option values as a reader reads them: '–' for unset, yes/no, byte counts in GiB, lists
    comma-separated; anything nested stays exact as compact JSON."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in _BYTE_OPTIONS and isinstance(value, int):
        return f"{human_bytes(value)} ({value:,} bytes)"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(map(str, value)) or "–"
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _policy_block(policy: Any) -> dict[str, Any] | None:
    """The policy as tables: its identity (source, hash, levels, ignored layers), one row per rule
    (enabled, severity, thresholds, whether that is the rule's default) and the waivers with
    reason and owner; not a JSON blob."""
    if not isinstance(policy, dict):
        return None
    head = [
        ("source", policy.get("source") or "defaults (no policy file)"),
        ("sha-256", policy.get("sha256") or "–"),
        ("fail-on", policy.get("fail_on") or "–"),
        ("report-level", policy.get("report_level") or "–"),
        ("ignored layers", option_text(policy.get("ignore_layers") or None)),
    ]
    from wwaudit.rules.policy import Policy

    defaults = Policy().settings()["rules"]
    rules = [
        {
            "id": rule_id,
            "enabled": "yes" if r.get("enabled") else "no",
            "severity": r.get("severity", "–"),
            "params": ", ".join(f"{k.replace('_', '-')} = {fmt(v)}" for k, v in r.get("params", {}).items()) or "–",
            "default": r == defaults.get(rule_id),
        }
        for rule_id, r in (policy.get("rules") or {}).items()
    ]
    waivers = [
        {"rule": w.get("rule"), "layer": w.get("layer") or "every layer", "reason": w.get("reason"), "owner": w.get("owner")}
        for w in policy.get("waivers") or []
    ]
    return {"head": head, "rules": rules, "waivers": waivers}


def command_args(command: str) -> list[str]:
    """The recorded command as groups that must not break inside: each option with its value
    ("--json x.json"), each other argument alone. The template joins them with breakable spaces."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        return [command] if command else []
    groups: list[str] = []
    after_option = False  # the previous word was a --long option without '=': a value may follow
    for word in words:
        if after_option and not word.startswith("-"):
            groups[-1] += " " + shlex.quote(word)
            after_option = False
            continue
        groups.append(shlex.quote(word))
        after_option = word.startswith("--") and "=" not in word
    return groups


# Why these are kept out of the PDF's listing: on a detector 139 of 202 entries were biases,
# scalars and shape constants, pages of rows that say "skipped" for the same reason.
_NON_WEIGHT_GROUPS = (
    ("scalar", "scalars"),
    ("1-D", "biases, norm scales and other 1-D vectors"),
    ("vector of shape", "biases, norm scales and other 1-D vectors"),
    ("not a weight slot", "inputs of ops that take no weight (shapes, indices, constants)"),
    ("not consumed by any op", "tensors no op reads"),
    ("tensor attribute", "constants inside node attributes"),
)


def non_weight_group(layer: LayerResult) -> str | None:
    """The group of a skipped entry that is not a weight matrix (bias, scalar, shape constant...),
    or None for weight layers, including weights skipped for a limit or an unsupported format."""
    if layer.status != "skipped" or layer.kind != "none":
        return None
    reason = layer.reason or ""
    return next((label for prefix, label in _NON_WEIGHT_GROUPS if reason.startswith(prefix)), None)


def _non_weight_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Counts of the non-weight entries by group, with a few example names each."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row["non_weight"]:
            groups.setdefault(row["non_weight"], []).append(row["name"])
    return [
        {"label": label, "count": len(names), "examples": ", ".join(names[:3]) + (", …" if len(names) > 3 else "")}
        for label, names in groups.items()
    ]


def _wants_plot(mode: str, layer: LayerResult, found: list[Finding]) -> bool:
    """'findings': every layer with a finding (an unreadable one shows its reason instead of a plot);
    'all': additionally every analysed layer; skipped tensors never get a section of their own."""
    if mode == "none":
        return False
    return bool(found) or (mode == "all" and layer.analysed)


def _plotted_layers(layers: list[LayerResult], by_layer: dict[int, list[Finding]], mode: str, limit: int) -> tuple[set[int], int]:
    """Ids of the layers that get a detail section, and how many would without the limit. With
    'findings' and a limit, the most severe first (error, warning, info; then more distinct rules;
    then layer order).

    Why a limit: a detail section costs ~0.1 s of plotting and page layout per layer, so a model
    where every one of 150 layers carries the same warning would spend longer on the report than
    on the analysis, for pages that repeat one another; the layer table lists every finding.
    """
    wanted = [layer for layer in layers if _wants_plot(mode, layer, by_layer.get(layer.id, []))]
    if mode != "findings" or limit <= 0 or len(wanted) <= limit:
        return {layer.id for layer in wanted}, len(wanted)

    def severity(layer: LayerResult) -> tuple[int, int, int]:
        found = by_layer.get(layer.id, [])
        worst = min((SEVERITY_ORDER.get(f.severity, len(SEVERITY_ORDER)) for f in found), default=len(SEVERITY_ORDER))
        return worst, -len({f.rule for f in found}), layer.id

    return {layer.id for layer in sorted(wanted, key=severity)[:limit]}, len(wanted)


def _column_widths(keys: list[str]) -> list[str]:
    weights = [_COLUMN_WEIGHTS.get(key, _METRIC_WEIGHT) for key in keys]
    total = sum(weights)
    return [f"{100 * w / total:.2f}%" for w in weights]


def text_width(text: str) -> int:
    """Columns a string takes in a monospace font: combining marks take none (the hat of α̂), wide
    East Asian characters two."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _listing(columns: list[tuple[str, str, bool]], rows: list[dict[str, Any]], page_size: str) -> dict[str, Any]:
    """The PDF's layer listing (see _LISTING_GAP): sets each row's "line", the fields of every
    column but '#' and the name, padded to a common width (numbers right-aligned); a layer without
    metrics shows its reason where the metrics would be. Returns the header line, each field's
    width in characters, and the font size at which the longest line fits the fields column
    (lines that still do not fit wrap)."""
    fields = [(key, _LISTING_LABELS.get(key, label), numeric) for key, label, numeric in columns if key not in ("id", "name")]
    cells = [
        {key: (text, row["analysed"] or not spanned) for key, text, _sort, _num, spanned in row["cells"]} for row in rows
    ]  # per row: key -> (text, shown in its own column)
    widths = {
        key: max([text_width(label)] + [text_width(c[key][0]) for c in cells if c[key][1]]) for key, label, _numeric in fields
    }

    def pad(text: str, key: str, numeric: bool) -> str:
        gap = " " * (widths[key] - text_width(text))
        return gap + text if numeric else text + gap

    header = _LISTING_GAP.join(pad(label, key, numeric) for key, label, numeric in fields)
    span = _LISTING_GAP.join(" " * widths[key] for key, _label, _numeric in fields if key in _SPANNED)
    longest = text_width(header)
    for row, row_cells in zip(rows, cells):
        parts = []
        for key, _label, numeric in fields:
            text, shown = row_cells[key]
            if shown:
                parts.append(pad(text, key, numeric))
            elif key == row["first_metric"]:
                reason = row["reason"] or "–"
                parts.append(reason + span[text_width(reason) :])
        row["line"] = _LISTING_GAP.join(parts)
        longest = max(longest, text_width(row["line"]))
    font = min(_LISTING_FONT_PT[1], _LISTING_FIELDS_PT.get(page_size, _LISTING_FIELDS_PT["A4"]) / (longest * _MONO_ADVANCE))
    return {"header": header, "widths": widths, "font_pt": f"{max(font, _LISTING_FONT_PT[0]):.2f}pt"}


def _tooltip(key: str, band: tuple[float, float]) -> str:
    if key == "shape":
        return "N×M, ×slices for conv kernels and stacked matrices"
    for k, _label, tip in METRIC_TABLE:
        if k == key:
            return tip.format(band=band_text(band))
    return ""


def _coverage_text(s: dict[str, Any]) -> str:
    share = s.get("coverage")
    text = f"{s.get('weights_analysed', 0)} of {s.get('weights', 0)}"
    return text + (f" ({share:.0%})" if isinstance(share, (int, float)) else "")


# What the judgement benchmark measured (README, "How reliable are these findings"): printed in
# every report so that a reviewer reads the verdict with its error rates.
RELIABILITY = (
    'Measured on 24 real pretrained models damaged one layer at a time (benchmarks/judgement.py, README "How '
    'reliable are these findings"): 22 of 24 intact models passed and none failed; zeros, NaN, truncated rank, '
    "duplicated or copied rows, x30 scaling, 4-bit and 2-bit rounding and layers reset to a uniform initialiser were "
    "named in 89-100% of cases, layers re-initialised from a Gaussian in 56-85%, additive noise in none. What the "
    "method cannot see: additive noise below the "
    "layer's own scale, layers too small to tell from random (fewer than 32 eigenvalues per slice), two layers "
    "swapped, and anything the weights' spectra do not show (a wrong label map, a wrong preprocessing)."
)


def gate_note(result: AuditResult) -> str:
    """What the verdict means for a CI gate under the policy in force (page one, terminal)."""
    fail_on = (result.options.get("policy") or {}).get("fail_on", "error")
    return {
        "pass": "Pass: nothing a reviewer must look at (exit code 0).",
        "review": (
            f"Review: warnings a reviewer should look at. The gate (fail-on {fail_on}) lets it through with "
            "exit code 0; --fail-on warning stops on them."
        ),
        "inconclusive": ("Inconclusive: the audit did not cover the model's weights, so it cannot pass (exit code 3)."),
        "fail": f"Fail: findings at or above fail-on {fail_on} (exit code 1).",
    }.get(result.verdict, "")


def _key_metrics(result: AuditResult, band: tuple[float, float]) -> list[tuple[str, str, str]]:
    s = result.summary
    return [
        (
            "Weights analysed",
            _coverage_text(s),
            "Weight matrices analysed, and in brackets their share of the weight parameters. "
            f"{s.get('weights_not_analysable', 0)} too small or depthwise to analyse, {s.get('weights_skipped_for_limit', 0)} "
            f"skipped for a limit, {s.get('weights_not_selected', 0)} not selected, {s.get('errors', 0)} unreadable, "
            f"{s.get('fit_failed', 0)} with a failed power-law fit. Every weight in the file is listed; skipped ones "
            "carry their reason"
            + (
                f" ({s['unlisted_skipped']} more skipped non-weight tensors are counted by reason in the JSON summary, "
                "not listed)."
                if s.get("unlisted_skipped")
                else "."
            ),
        ),
        (
            "Mean alpha",
            fmt(s.get("alpha_mean")),
            f"Tail exponent of the eigenvalue spectrum, over the {s.get('reliable_fits', 0)} reliable fits. The articles "
            f"place well-trained layers in about {band_text(band)}; real models differ by layer kind, so the audit judges "
            "layers against their siblings rather than this band.",
        ),
        (
            "Alpha-hat",
            fmt(s.get("alpha_weighted_mean")),
            "Mean α·log10 λmax over the reliable fits. It ranks checkpoints of one architecture trained for one task; "
            "across architectures it is not comparable (GPT-2 ≈ 9.8, good DenseNets below 0), and alone it says "
            "nothing about this model.",
        ),
        ("Mean log-norm", fmt(s.get("log_norm_mean")), "Mean log10 of the squared Frobenius norm: the scale of the weights."),
        (
            f"Share of layers with α in {band_text(band)}",
            fmt(s.get("share_alpha_in_band")),
            "Fraction of the reliable fits inside the band: a description of the model, not a score.",
        ),
    ]


def _without_layer(f: Finding) -> str:
    """The finding's message without its leading "<layer>: ": wherever the report shows a message,
    the layer is named beside it (a Layer column, the layer's own section)."""
    prefix = f"{f.layer}: " if f.layer else ""
    return f.message[len(prefix) :] if prefix and f.message.startswith(prefix) else f.message


def _finding_groups(findings: list[Finding]) -> list[dict[str, Any]]:
    """Findings grouped by rule (worst severity first): the rule's why and what-to-do once, then
    each distinct message once with every layer it applies to, in depth order. Why merge: rules
    such as WW003 or WW004 often say the same thing of dozens of layers ("1 of 1024 singular
    values are numerically zero"); a row per layer made 9 pages of repeats on BERT-large."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for f in findings:
        key = (f.rule, f.severity)
        if key not in groups:
            rule = RULES_BY_ID.get(f.rule)
            groups[key] = {
                "rule": f.rule,
                "severity": f.severity,
                "title": getattr(rule, "title", "") or f.rule,
                "rationale": getattr(rule, "rationale", "") or "",
                "remedy": getattr(rule, "remedy", "") or "",
                "count": 0,
                "by_message": {},
            }
        group = groups[key]
        group["count"] += 1
        message = _without_layer(f)
        group["by_message"].setdefault(message, []).append(
            {"name": f.layer or "model", "anchor": f"layer-{f.layer_id}" if f.layer_id is not None else ""}
        )
    for group in groups.values():
        group["items"] = [{"message": message, "layers": layers} for message, layers in group.pop("by_message").items()]
    return sorted(groups.values(), key=lambda g: (SEVERITY_ORDER.get(g["severity"], 3), g["rule"]))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(for_pdf: bool) -> list[tuple[str, str]]:
    """Versions that can change the numbers or the rendering (read from metadata, nothing imported)."""
    names = ["numpy", "scipy", "onnx", "onnxruntime", "powerlaw", "matplotlib", "jinja2"]
    if for_pdf:
        names.append("weasyprint")
    return (
        [("wwaudit", wwaudit.__version__)]
        + [(n, _version(n)) for n in names]
        + [("python", platform.python_version()), ("platform", f"{platform.system()} {platform.machine()}")]
    )
