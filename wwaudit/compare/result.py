"""The comparison's result document (`schema: wwaudit-compare/1`): what every compare output reads.

Like records.py for one model: renderers format what is here and compute nothing. The two
audits stay attached (not serialised) so the report can plot both models' spectra.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from wwaudit.layer_metrics import MODEL_METRICS as LAYER_MODEL_METRICS
from wwaudit.records import AuditResult, Finding, clean_number, dataframe, flat_row, html_table

SCHEMA = "wwaudit-compare/1"

CAVEAT = (
    "Mean alpha, alpha-hat and log-norm can rank checkpoints of one architecture trained for the same task "
    "(there, lower tends to generalise better: Martin, Peng & Mahoney 2021). Across architectures or tasks they "
    "are not comparable, a damaged model can score lower than a good one, and no data-free metric replaces an "
    "evaluation on held-out data: the table says which value is lower, not which model is better."
)

# Model-level metrics compared, from each audit's summary (layer_metrics: those with a model_label);
# `lower` says which model has the lower value, never which is better.
MODEL_METRICS: tuple[tuple[str, str], ...] = LAYER_MODEL_METRICS


@dataclass
class PairResult:
    """One matched layer pair: both sides' metrics, their deltas and the matrix-level differences."""

    base: str
    candidate: str
    base_id: int
    candidate_id: int
    base_tensor: str
    candidate_tensor: str
    match: str  # "name" | "structure"
    base_op: str
    candidate_op: str
    kind: str
    N: int | None
    M: int | None
    slices: int | None
    base_metrics: dict[str, Any]
    candidate_metrics: dict[str, Any]
    delta: dict[str, Any]
    relative_distance: float | None = None
    subspace_overlap: float | None = None
    subspace_k: int | None = None
    subspace_overlap_random: float | None = None
    top_sv_rel_change: float | None = None
    diff: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # "ok" | "skipped" (size gate) | "error" (matrices unreadable or not comparable)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "candidate": self.candidate,
            "base_id": self.base_id,
            "candidate_id": self.candidate_id,
            "base_tensor": self.base_tensor,
            "candidate_tensor": self.candidate_tensor,
            "match": self.match,
            "base_op": self.base_op,
            "candidate_op": self.candidate_op,
            "kind": self.kind,
            "N": self.N,
            "M": self.M,
            "slices": self.slices,
            "status": self.status,
            "reason": self.reason,
            "base_metrics": {k: clean_number(v) for k, v in self.base_metrics.items()},
            "candidate_metrics": {k: clean_number(v) for k, v in self.candidate_metrics.items()},
            "delta": {k: clean_number(v) for k, v in self.delta.items()},
            "relative_distance": clean_number(self.relative_distance),
            "subspace_overlap": clean_number(self.subspace_overlap),
            "subspace_k": self.subspace_k,
            "subspace_overlap_random": clean_number(self.subspace_overlap_random),
            "top_sv_rel_change": clean_number(self.top_sv_rel_change),
            "diff": {k: clean_number(v) for k, v in self.diff.items()},
        }


@dataclass
class CompareResult:
    """Everything one comparison produced."""

    base: AuditResult
    candidate: AuditResult
    pairs: list[PairResult]
    unmatched_base: list[str]
    unmatched_candidate: list[str]
    model_metrics: list[dict[str, Any]]
    findings: list[Finding]
    verdict: str  # "pass" | "review" | "inconclusive" | "fail"
    verdict_reasons: list[str]
    options: dict[str, Any]
    suppressed: list[Finding] = field(default_factory=list)

    def as_audit(self) -> AuditResult:
        """The comparison in the shape the CI formats read (SARIF, JUnit, Markdown): the candidate's
        identity and layers, the comparison's findings, verdict and policy."""
        from dataclasses import replace

        s = self.summary()
        compared = sum(1 for p in self.pairs if p.status == "ok")
        summary = {
            **self.candidate.summary,
            "weights": len(self.candidate.analysed_layers()),
            "weights_analysed": compared,
            "coverage": None,
            "findings": len(self.findings),
            "pairs": s["pairs"],
        }
        return replace(
            self.candidate,
            findings=self.findings,
            suppressed=self.suppressed,
            verdict=self.verdict,
            verdict_reasons=self.verdict_reasons,
            options=self.options,
            summary=summary,
        )

    @property
    def layers(self) -> list[PairResult]:
        """The matched layer pairs (the comparison's unit, as layers are the audit's)."""
        return self.pairs

    def to_dataframe(self) -> Any:
        """One pandas row per layer pair: identity, `delta.*`, `diff.*`, `base_metrics.*` and
        `candidate_metrics.*` columns. Needs the [dataframe] extra."""
        return dataframe([flat_row(p.to_dict()) for p in self.pairs])

    def _repr_html_(self) -> str:
        """The notebook view: verdict, findings and the pairs' main differences."""
        head = (
            f"<p><b>wwaudit compare</b> {html.escape(self.base.model.path)} → "
            f"{html.escape(self.candidate.model.path)}: verdict <b>{html.escape(self.verdict)}</b>; "
            f"{len(self.pairs)} layer pairs, {len(self.unmatched_base)} + {len(self.unmatched_candidate)} "
            f"unmatched; {len(self.findings)} findings</p>"
        )
        findings = html_table(
            ("rule", "severity", "layer", "message"), [(f.rule, f.severity, f.layer or "model", f.message) for f in self.findings]
        )
        pairs = html_table(
            ("base", "candidate", "match", "status", "Δ alpha", "relative distance", "subspace overlap"),
            [
                (p.base, p.candidate, p.match, p.status, p.delta.get("alpha"), p.relative_distance, p.subspace_overlap)
                for p in self.pairs
            ],
        )
        return head + (findings if self.findings else "") + pairs

    def summary(self) -> dict[str, Any]:
        ok = [p for p in self.pairs if p.status == "ok"]
        distances = [p.relative_distance for p in ok if p.relative_distance is not None]
        overlaps = [p.subspace_overlap for p in ok if p.subspace_overlap is not None]
        return {
            "pairs": len(self.pairs),
            "matched_by_name": sum(1 for p in self.pairs if p.match == "name"),
            "matched_by_structure": sum(1 for p in self.pairs if p.match == "structure"),
            "unmatched_base": len(self.unmatched_base),
            "unmatched_candidate": len(self.unmatched_candidate),
            "relative_distance_max": max(distances) if distances else None,
            "subspace_overlap_min": min(overlaps) if overlaps else None,
            "verdict": self.verdict,
        }

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON contract: no timestamps or timings, same inputs give the same bytes."""
        return {
            "schema": SCHEMA,
            "base": self.base.model.to_dict(),
            "candidate": self.candidate.model.to_dict(),
            "options": self.options,
            "summary": {k: clean_number(v) for k, v in self.summary().items()},
            "models": [{k: clean_number(v) for k, v in row.items()} for row in self.model_metrics],
            "caveat": CAVEAT,
            "verdict": {"verdict": self.verdict, "reasons": list(self.verdict_reasons)},
            "pairs": [p.to_dict() for p in self.pairs],
            "unmatched": {"base": list(self.unmatched_base), "candidate": list(self.unmatched_candidate)},
            "findings": [f.to_dict() for f in self.findings],
            "suppressed": [f.to_dict() for f in self.suppressed],
        }
