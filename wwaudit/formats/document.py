"""The report's document model: what every report format shows, already formatted as text.

Built from an AuditResult (no metric is computed here); HTML and PDF render this same model so
they cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import wwaudit
from wwaudit.auditor.findings import RULES_BY_ID
from wwaudit.auditor.results import AuditResult
from wwaudit.formats import RenderContext

TABLE_COLUMNS = (
    ("id", "#"),
    ("name", "layer"),
    ("op", "op"),
    ("shape", "N×M×slices"),
    ("status", "status"),
    ("alpha", "α"),
    ("alpha_weighted", "α̂"),
    ("D", "D"),
    ("log_norm", "log‖W‖²"),
    ("log_spectral_norm", "log λmax"),
    ("stable_rank", "stable rank"),
    ("rank_loss", "rank loss"),
)


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


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def build_document(result: AuditResult, ctx: RenderContext, for_pdf: bool = False) -> dict[str, Any]:
    """Everything the templates show, as strings and small lists."""
    model = result.model
    s = result.summary
    counts = {sev: sum(1 for f in result.findings if f.severity == sev) for sev in ("error", "warning", "info")}
    layers = []
    for layer in result.layers:
        row = {"id": str(layer.id), "name": layer.name, "op": layer.op or "–", "status": layer.status,
               "reason": layer.reason or "", "tensor": layer.tensor, "dtype": layer.dtype or "",
               "shape": f"{layer.N}×{layer.M}" + (f"×{layer.slices}" if layer.slices and layer.slices > 1 else "") if layer.N else "×".join(map(str, layer.shape or [])) or "scalar"}
        for key, _label in TABLE_COLUMNS:
            if key not in row:
                row[key] = fmt(layer.metric(key))
        row["findings"] = [f.rule for f in result.findings if f.layer_id == layer.id]
        layers.append(row)
    findings = [
        {"rule": f.rule, "severity": f.severity, "message": f.message, "layer": f.layer or "model",
         "title": RULES_BY_ID[f.rule].title if f.rule in RULES_BY_ID else f.rule}
        for f in result.findings
    ]
    return {
        "title": f"wwaudit report: {model.path}",
        "model": {
            "path": model.path, "sha256": model.sha256, "short_hash": model.sha256[:12],
            "size": human_bytes(model.size_bytes), "producer": f"{model.producer} {model.producer_version}".strip() or "unknown",
            "opset": ", ".join(f"{d} {v}" for d, v in sorted(model.opset.items())), "parameters": fmt(model.parameters),
            "ir_version": str(model.ir_version), "external_data": "yes" if model.external_data else "no",
        },
        "verdict": result.verdict,
        "verdict_reasons": result.verdict_reasons,
        "summary": [
            ("Layers analysed", f"{s['analysed']} of {s['layers']} weight entries ({s['skipped']} skipped, {s['errors']} unreadable)",
             "Every weight tensor in the file is listed; skipped ones carry their reason."),
            ("Mean alpha", fmt(s.get("alpha_mean")), "Power-law exponent of the eigenvalue tail; well-trained layers lie in [2, 6]."),
            ("Alpha-hat", fmt(s.get("alpha_weighted_mean")), "Mean α·log10 λmax: lower is better within one architecture family."),
            ("Mean log-norm", fmt(s.get("log_norm_mean")), "Mean log10 of the squared Frobenius norm."),
            ("Share of layers with α in [2, 6]", fmt(s.get("share_alpha_in_band")), "Fraction of fitted layers inside the usual range."),
        ],
        "counts": counts,
        "columns": TABLE_COLUMNS,
        "layers": layers,
        "findings": findings,
        "options": sorted((k, str(v)) for k, v in result.options.items()),
        "versions": _versions(),
        "command": ctx.command,
        "generated": ctx.generated,
        "page_size": ctx.page_size,
        "wwaudit_version": wwaudit.__version__,
    }


def _versions() -> list[tuple[str, str]]:
    import onnx
    import scipy

    return [("wwaudit", wwaudit.__version__), ("numpy", np.__version__), ("scipy", scipy.__version__), ("onnx", onnx.__version__)]
