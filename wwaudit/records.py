"""The audit's result document: the one intermediate model every renderer reads.

Renderers (JSON, CSV, HTML, PDF, SARIF, ...) only format what is here; nothing in this module
reads ONNX or computes metrics. The JSON contract (`schema: wwaudit/1`) is `AuditResult.to_dict()`.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from wwaudit.layer_metrics import METRIC_COLUMNS, OPTIONAL_COLUMNS

SCHEMA = "wwaudit/1"

# Per-layer metric columns, in the order the JSON and the tables show them (layer_metrics.METRICS).
# Metrics a layer does not have are null. Opt-in metrics (OPTIONAL_COLUMNS) follow, in the list's
# order, only where their option computed them: an audit without those options keeps its bytes.
_KNOWN_COLUMNS = frozenset(METRIC_COLUMNS) | frozenset(OPTIONAL_COLUMNS)


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
    # Sorted hashes of the first slice's non-zero output rows (spectral/structure.row_hashes), for
    # the rule on rows copied between layers (WW017); never serialised.
    row_hashes: Any = field(default=None, repr=False, compare=False)
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
        for key in OPTIONAL_COLUMNS:
            if key in self.metrics:
                out[key] = clean_number(self.metrics[key])
        for key in sorted(k for k in self.metrics if k not in _KNOWN_COLUMNS):
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


@dataclass(frozen=True)
class Coverage:
    """What share of the file's weights the audit analysed: the evidence behind "nothing checked".

    A weight is a tensor in an op's weight slot (a layer, also when too small or depthwise to
    analyse); parameters are shared out evenly among the layers cut from one tensor (LSTM gates).
    `skipped_for_limit`: weights left out by --max-evals or --max-memory; `not_selected`: weights
    --layers did not select. Both count against the analysed share.
    """

    weights: int = 0
    analysed: int = 0
    skipped_for_limit: int = 0
    not_selected: int = 0
    not_analysable: int = 0
    weight_parameters: int = 0
    analysed_parameters: int = 0

    @property
    def share(self) -> float | None:
        """Analysed share of the weight parameters (None when the file has no weights)."""
        return self.analysed_parameters / self.weight_parameters if self.weight_parameters else None

    def incomplete_reasons(self, allow_incomplete: bool = False) -> list[str]:
        """Why the audit cannot pass: nothing analysed, or (unless allowed) weights left out for a limit."""
        if self.analysed == 0:
            if self.weights == 0:
                return ["no weight found in the file: nothing was audited (weights fed as graph inputs are not in the file)"]
            why = f"{self.not_selected} not selected by --layers" if self.not_selected else "none could be analysed"
            return [f"0 of {self.weights} weights analysed ({why}): nothing was audited"]
        if self.skipped_for_limit and not allow_incomplete:
            return [
                f"{self.skipped_for_limit} of {self.weights} weights skipped for --max-evals/--max-memory: "
                "the audit is incomplete (raise the limit, or allow-incomplete in the policy)"
            ]
        return []

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "weights_analysed": self.analysed,
            "weights_skipped_for_limit": self.skipped_for_limit,
            "weights_not_selected": self.not_selected,
            "weights_not_analysable": self.not_analysable,
            "weight_parameters": self.weight_parameters,
            "weight_parameters_analysed": self.analysed_parameters,
            "coverage": None if self.share is None else float(f"{self.share:.6g}"),
        }


@dataclass
class AuditResult:
    """Everything one audit produced, in the order renderers show it."""

    model: ModelInfo
    layers: list[LayerResult]
    findings: list[Finding]
    verdict: str  # "pass" | "review" | "inconclusive" | "fail"
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

    def to_dataframe(self) -> Any:
        """One pandas row per layer entry, the columns of the CSV output (metrics as numbers, NaN
        where a layer has none; `reference.*` with --reference). Needs the [dataframe] extra."""
        return dataframe([flat_row(layer.to_dict()) for layer in self.layers])

    def _repr_html_(self) -> str:
        """The notebook view: verdict, findings, and the layers' key metrics."""
        analysed = sum(1 for layer in self.layers if layer.analysed)
        counts = ", ".join(f"{sum(1 for f in self.findings if f.severity == s)} {s}" for s in ("error", "warning", "info"))
        head = (
            f"<p><b>wwaudit</b> {html.escape(self.model.path)}: verdict <b>{html.escape(self.verdict)}</b>; "
            f"{analysed} of {len(self.layers)} layers analysed; findings: {counts}</p>"
        )
        findings = html_table(
            ("rule", "severity", "layer", "message"), [(f.rule, f.severity, f.layer or "model", f.message) for f in self.findings]
        )
        layers = html_table(
            ("id", "layer", "op", "shape", "status") + HTML_METRICS,
            [
                (layer.id, layer.name, layer.op, _shape(layer), layer.status, *(layer.metric(k) for k in HTML_METRICS))
                for layer in self.layers
            ],
        )
        return head + (findings if self.findings else "") + layers

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


# The metrics the notebook view shows per layer (to_dataframe() has them all).
HTML_METRICS: tuple[str, ...] = ("alpha", "D", "log_spectral_norm", "stable_rank", "num_traps")


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """Nested blocks (a layer's `reference` from --reference) become `block.key` columns."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            out[key] = value
    return out


def dataframe(rows: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame of flat rows. pandas is optional (the [dataframe] extra): the audit itself
    never needs it, so it is imported here and its absence is one clear message."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe() needs pandas: pip install 'wwaudit[dataframe]'") from None
    return pd.DataFrame(rows)


def html_table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """A small escaped HTML table for notebooks (names come from the model file: never raw HTML)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_html_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_cell(value: Any) -> str:
    value = clean_number(value)
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _shape(layer: LayerResult) -> str:
    if layer.N is None or layer.M is None:
        return "–"
    return f"{layer.N}×{layer.M}" + (f" ×{layer.slices}" if layer.slices and layer.slices > 1 else "")


@dataclass(frozen=True)
class Storage:
    """How the analysed values were rounded when stored: the error model of the storage noise floor.

    eps: machine epsilon of the stored float format (relative error ≤ eps/2 per element); tiny:
    its smallest subnormal (absolute error ≤ tiny/2 near zero; 0 where a scale makes it
    irrelevant); step: for integer codes, the root mean square of the quantisation step (the
    scale, in the dequantized values' units; error ≤ step/2), 0 for float storage.
    """

    eps: float
    tiny: float = 0.0
    step: float = 0.0

    @classmethod
    def of(cls, storage: "Storage | float") -> "Storage":
        """A Storage; a bare float is the machine epsilon of a float storage format."""
        return storage if isinstance(storage, Storage) else cls(float(storage))


# Names come from the model file and can be any length (a 99,000-character node name was seen
# fuzzing): outputs carry at most this many characters of one, so a report stays readable and
# its layout time bounded.
MAX_NAME_CHARS = 256


def short_name(name: str, limit: int = MAX_NAME_CHARS) -> str:
    """`name` cut to `limit` characters, saying how long it was when cut."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 40]}… ({len(name)} characters)"


@dataclass
class ZooEntry:
    """One model of an audit of several models (`wwaudit audit MODEL… --out-dir DIR`).

    `result` is None when the model could not be audited; `error` then says why (one line), and
    the other models are audited all the same. `seconds`: loading and planning plus the analysis
    time of its layers summed over the workers that ran them (its tasks run interleaved with the
    other models', so its share of the wall clock is not defined).
    """

    name: str  # unique among the run's models: the base name of its files in the output folder
    path: str
    result: AuditResult | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        """The model's verdict, or 'error' when it could not be audited."""
        return self.result.verdict if self.result is not None else "error"
