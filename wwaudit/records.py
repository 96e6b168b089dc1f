"""The audit's result document: the one intermediate model every renderer reads.

Renderers (JSON, CSV, HTML, PDF, SARIF, ...) only format what is here; nothing in this module
reads ONNX or computes metrics. The JSON contract (`schema: wwaudit/1`) is `AuditResult.to_dict()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "wwaudit/1"

# Per-layer metric columns, in the order the JSON and the tables show them. Metrics a layer does
# not have are null. Modules that compute more metrics add their keys here so that every
# renderer shows them in one stable order.
METRIC_COLUMNS: tuple[str, ...] = (
    "num_evals",
    "lambda_max",
    "sv_max",
    "alpha",
    "alpha_ci_low",
    "alpha_ci_high",
    "alpha_weighted",
    "D",
    "xmin",
    "xmax",
    "sigma",
    "num_pl_spikes",
    "log_norm",
    "log_spectral_norm",
    "log_alpha_norm",
    "stable_rank",
    "matrix_rank",
    "rank_loss",
    "weak_rank_loss",
    "entropy",
    "num_spikes",
    "sigma_mp",
    "mp_softrank",
    "bulk_min",
    "bulk_max",
    "num_traps",
    "rand_distance",
    "rand_bulk_max",
    "best_fit",
    "tpl_alpha",
    "tpl_lambda",
    "R_tpl",
    "p_tpl",
    "R_lognormal",
    "p_lognormal",
    "R_exponential",
    "p_exponential",
    "phase",
)


@dataclass(frozen=True)
class IntegrityIssue:
    """A payload ambiguity found while loading: what a viewer shows may not be what runs.

    `kind` names the rule's fact (two_payloads, duplicate_initializer, input_override,
    overlapping_external, dtype_payload); `message` says which payload onnxruntime executes.
    """

    kind: str
    message: str


@dataclass
class Finding:
    """One rule violation, on one layer or on the whole model (layer is None)."""

    rule: str
    severity: str  # "info" | "warning" | "error"
    message: str
    layer: str | None = None
    layer_id: int | None = None
    tensor: str | None = None  # the source tensor: with rule and layer, what a baseline matches on
    suppressed_by: str | None = None  # "policy" | "baseline" when waived, else None
    justification: str | None = None  # why it was waived

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity,
            "layer": self.layer,
            "layer_id": self.layer_id,
            "tensor": self.tensor,
            "message": self.message,
        }
        if self.suppressed_by:
            out["suppressed_by"] = self.suppressed_by
            out["justification"] = self.justification
        return out


@dataclass
class LayerResult:
    """One audited (or skipped) weight matrix view: the op that consumes a weight."""

    id: int
    name: str
    op: str
    tensor: str
    kind: str
    N: int | None = None
    M: int | None = None
    slices: int | None = None
    shape: list[int] | None = None
    dtype: str | None = None
    quantization: str | None = None
    status: str = "ok"  # "ok" | "fit_failed" | "skipped" | "error"
    reason: str | None = None
    # Cause of status "error": nonfinite (NaN/Inf weights), zero (all-zero weights), numeric
    # (eigensolver/overflow), unreadable (tensor data cannot be read), internal (a wwaudit bug).
    problem: str | None = None
    used_by: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Eigenvalues kept for plots, never serialised into the JSON contract: `evals` the pooled ESD the
    # metrics were computed on (conv layers scaled by ½, see metrics.CONV_NORM_FACTOR), `random_evals`
    # the ESD of one element-shuffled copy on the same scale (None with --fast).
    evals: Any = field(default=None, repr=False, compare=False)
    random_evals: Any = field(default=None, repr=False, compare=False)
    # Quantization damage against a float reference layer (`--reference`, compare/engine.py);
    # serialised only when set, so audits without a reference keep their bytes.
    reference: dict[str, Any] | None = None

    @property
    def analysed(self) -> bool:
        return self.status in ("ok", "fit_failed")

    def metric(self, key: str) -> Any:
        return self.metrics.get(key)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "op": self.op,
            "tensor": self.tensor,
            "kind": self.kind,
            "N": self.N,
            "M": self.M,
            "slices": self.slices,
            "shape": self.shape,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "status": self.status,
            "reason": self.reason,
            "problem": self.problem,
            "used_by": list(self.used_by),
            "notes": list(self.notes),
        }
        for key in METRIC_COLUMNS:
            out[key] = clean_number(self.metrics.get(key))
        for key in sorted(k for k in self.metrics if k not in METRIC_COLUMNS):
            out[key] = clean_number(self.metrics[key])
        if self.reference is not None:
            out["reference"] = {k: clean_number(v) for k, v in self.reference.items()}
        return out


@dataclass
class ModelInfo:
    """Identity of the audited file: what a reviewer signs off."""

    path: str
    sha256: str
    size_bytes: int
    producer: str
    producer_version: str
    opset: dict[str, int]
    ir_version: int
    parameters: int
    graph_name: str
    external_data: bool = False
    doc_string: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "producer": self.producer,
            "producer_version": self.producer_version,
            "opset": dict(sorted(self.opset.items())),
            "ir_version": self.ir_version,
            "parameters": self.parameters,
            "graph_name": self.graph_name,
            "external_data": self.external_data,
        }


@dataclass
class AuditResult:
    """Everything one audit produced, in the order renderers show it."""

    model: ModelInfo
    layers: list[LayerResult]
    findings: list[Finding]
    verdict: str  # "pass" | "review" | "fail"
    verdict_reasons: list[str]
    options: dict[str, Any]
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    # Findings waived by the policy (ignored layers) or already in the baseline: kept for SARIF
    # suppressions and for chaining baselines, never counted in the verdict.
    suppressed: list[Finding] = field(default_factory=list)
    # The float reference model of `--reference` (identity, unmatched layers); None without it.
    reference: dict[str, Any] | None = None

    def analysed_layers(self) -> list[LayerResult]:
        return [layer for layer in self.layers if layer.analysed]

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON contract. No timestamps or timings: same input, same bytes."""
        out = {
            "schema": SCHEMA,
            "model": self.model.to_dict(),
            "options": self.options,
            "summary": {k: clean_number(v) for k, v in self.summary.items()},
            "verdict": {"verdict": self.verdict, "reasons": list(self.verdict_reasons)},
            "layers": [layer.to_dict() for layer in self.layers],
            "findings": [f.to_dict() for f in self.findings],
            "suppressed": [f.to_dict() for f in self.suppressed],
        }
        if self.reference is not None:
            out["reference"] = self.reference
        return out


def clean_number(value: Any) -> Any:
    """Turn numpy scalars into plain Python numbers and NaN/inf into null (JSON has neither)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [clean_number(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.12g}")
    return value


def finite_or_none(value: Any) -> float | None:
    """A metric as a finite float, None when missing, non-numeric, NaN or infinite (rules and phases read metrics this way)."""
    if value is None or isinstance(value, (bool, str)):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


# Names come from the model file and can be any length (a 99,000-character node name was seen
# fuzzing): outputs carry at most this many characters of one, so a report stays readable and
# its layout time bounded.
MAX_NAME_CHARS = 256


def short_name(name: str, limit: int = MAX_NAME_CHARS) -> str:
    """`name` cut to `limit` characters, saying how long it was when cut."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 40]}… ({len(name)} characters)"
