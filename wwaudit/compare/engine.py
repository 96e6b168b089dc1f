"""Orchestration of a comparison: audit both models, match their layers, measure each pair.

Both models are audited by engine.core.audit (same metrics, same findings as a single audit);
the layers' matrices are then read again through LayerSpec.matrices, one pair at a time, so at
most one pair's matrices are in memory. `wwaudit compare` and the audit's `--reference` option
share this code: a reference check is a comparison whose base is the float reference.
"""

from __future__ import annotations

import re
from typing import Any

from wwaudit.engine.core import audit
from wwaudit.ingest.plan import LayerSpec, safe_name
from wwaudit.ingest.sources import open_source
from wwaudit.ingest.tensors import dtype_eps
from wwaudit.options import AuditOptions
from wwaudit.records import AuditResult, LayerResult
from wwaudit.rules import judge as rule_registry
from wwaudit.rules.compare_rules import CompareContext
from wwaudit.compare.diff import DELTA_KEYS, metric_deltas, pair_diff
from wwaudit.compare.matching import Pair, match_layers
from wwaudit.compare.result import MODEL_METRICS, CompareResult, PairResult
from wwaudit.errors import InputError
from wwaudit.rules.policy import Policy

_SIDE_KEYS = DELTA_KEYS + ("rank_loss",)
# Model-level values closer than this (relative) count as equal.
TIE_TOLERANCE = 1e-3
# A comparison that matched fewer than this share of the smaller model's analysed layers (or none)
# compared too little to pass: its verdict is inconclusive (exit 3), like an audit that analysed nothing.
MIN_MATCHED_SHARE = 0.5


class _SpecIndex:
    """The LayerSpecs of an audited model, addressable by the audit's layer ids."""

    def __init__(self, path: str, result: AuditResult, options: AuditOptions) -> None:
        self._source = open_source(path)  # the tensors read their bytes through this source
        pattern = re.compile(options.layers) if options.layers else None
        specs = [s for s in self._source.layers() if pattern is None or pattern.search(s.name) or pattern.search(s.tensor.name)]
        by_key = {(safe_name(s.name), safe_name(s.tensor.name)): s for s in specs}
        self._by_id: dict[int, LayerSpec] = {}
        for layer in result.layers:
            spec = specs[layer.id] if layer.id < len(specs) else None
            if spec is None or (safe_name(spec.name), safe_name(spec.tensor.name)) != (layer.name, layer.tensor):
                spec = by_key.get((layer.name, layer.tensor))
            if spec is not None:
                self._by_id[layer.id] = spec

    def spec(self, layer: LayerResult) -> LayerSpec:
        spec = self._by_id.get(layer.id)
        if spec is None or spec.skipped:
            raise InputError(f"{layer.name}: no matrices for this layer")
        return spec


def _side(layer: LayerResult) -> dict[str, Any]:
    out: dict[str, Any] = {"status": layer.status, "reason": layer.reason}
    out.update({key: layer.metric(key) for key in _SIDE_KEYS})
    return out


def measure_pair(pair: Pair, base_specs: _SpecIndex, cand_specs: _SpecIndex) -> PairResult:
    """Metric deltas and matrix differences of one matched pair (its matrices are released on return)."""
    a, b = pair.base, pair.candidate
    result = PairResult(
        base=a.name,
        candidate=b.name,
        base_id=a.id,
        candidate_id=b.id,
        base_tensor=a.tensor,
        candidate_tensor=b.tensor,
        match=pair.method,
        base_op=a.op,
        candidate_op=b.op,
        kind=a.kind,
        N=a.N,
        M=a.M,
        slices=a.slices,
        base_metrics=_side(a),
        candidate_metrics=_side(b),
        delta=metric_deltas(a.metrics, b.metrics),
    )
    gated = next((layer for layer in (a, b) if layer.status == "skipped"), None)
    if gated is not None:  # a size gate (--max-evals) skipped it: do not read its matrices either
        result.status, result.reason = "skipped", gated.reason
        return result
    try:
        spec_a, spec_b = base_specs.spec(a), cand_specs.spec(b)
        eps = max(dtype_eps(spec_a.tensor.data_type), dtype_eps(spec_b.tensor.data_type))
        mats_a = spec_a.matrices()
        mats_b = spec_b.matrices()
    except InputError as exc:
        result.status, result.reason = "error", str(exc)
        return result
    diff = pair_diff(mats_a, mats_b, a.kind, eps)
    del mats_a, mats_b
    result.relative_distance = diff.relative_distance
    result.subspace_overlap = diff.subspace_overlap
    result.subspace_k = diff.subspace_k
    result.subspace_overlap_random = diff.subspace_overlap_random
    result.top_sv_rel_change = diff.top_sv_rel_change
    result.diff = diff.diff
    result.status, result.reason = diff.status, diff.reason
    return result


def _lower(base: float | None, candidate: float | None) -> str | None:
    """Which model has the lower value ("equal" within TIE_TOLERANCE); a fact, not a ranking."""
    if base is None or candidate is None:
        return None
    if abs(candidate - base) <= TIE_TOLERANCE * max(abs(base), abs(candidate), 1e-12):
        return "equal"
    return "candidate" if candidate < base else "base"


def model_metrics(base: AuditResult, candidate: AuditResult) -> list[dict[str, Any]]:
    """Model-level averages side by side, and which model has the lower value.

    Lower alpha-hat tracks better accuracy only among checkpoints of one architecture trained for
    one task (Martin, Peng & Mahoney 2021); the comparison reports which is lower, never which is better.
    """
    rows = []
    for key, label in MODEL_METRICS:
        a, b = base.summary.get(key), candidate.summary.get(key)
        rows.append(
            {
                "metric": key,
                "label": label,
                "base": a,
                "candidate": b,
                "delta": (b - a) if a is not None and b is not None else None,
                "lower": _lower(a, b),
            }
        )
    return rows


def _measure_all(
    base_path: str, base: AuditResult, cand_path: str, candidate: AuditResult, options: AuditOptions, progress: Any | None
) -> tuple[list[PairResult], Any]:
    matching = match_layers(base.layers, candidate.layers)
    base_specs = _SpecIndex(base_path, base, options)
    cand_specs = _SpecIndex(cand_path, candidate, options)
    if progress:
        progress.start(len(matching.pairs))
    pairs = []
    for pair in matching.pairs:
        pairs.append(measure_pair(pair, base_specs, cand_specs))
        if progress:
            progress.advance(pair.candidate.name)
    if progress:
        progress.finish()
    return pairs, matching


def match_coverage(pairs: list[PairResult], base: AuditResult, candidate: AuditResult) -> list[str]:
    """Why the comparison cannot pass: no layer matched, or too few of the smaller model's."""
    analysed = min(len(base.analysed_layers()), len(candidate.analysed_layers()))
    matched = sum(1 for p in pairs if p.status == "ok")
    if matched == 0:
        return [
            f"no analysed layer of the two models could be compared ({len(pairs)} matched by name or structure): "
            "nothing was compared"
        ]
    if matched < MIN_MATCHED_SHARE * analysed:
        return [
            f"only {matched} of {analysed} analysed layers compared (< {MIN_MATCHED_SHARE:.0%}): "
            "the models are too different for the comparison to stand for them"
        ]
    return []


def compare(
    base_path: str,
    candidate_path: str,
    options: AuditOptions | None = None,
    progress: Any | None = None,
    policy: Policy | None = None,
) -> CompareResult:
    """Audit both models and compare them layer by layer; raises InputError/UsageError for bad input.

    The CMP rules come from the one rule registry and follow the same policy as the audit
    (severities, thresholds, ignore-layers, fail-on); the verdict is inconclusive when too few
    layers could be compared.
    """
    options = options or AuditOptions()
    policy = policy or Policy()
    base = audit(base_path, options, progress)
    candidate = audit(candidate_path, options, progress)
    pairs, matching = _measure_all(base_path, base, candidate_path, candidate, options, progress)
    unmatched_base = [layer.name for layer in matching.unmatched_base]
    unmatched_cand = [layer.name for layer in matching.unmatched_candidate]
    found = rule_registry.evaluate_compare(CompareContext(pairs, unmatched_base, unmatched_cand), policy)
    judged = rule_registry.settle(found, candidate.layers, policy, None, match_coverage(pairs, base, candidate))
    return CompareResult(
        base=base,
        candidate=candidate,
        pairs=pairs,
        unmatched_base=unmatched_base,
        unmatched_candidate=unmatched_cand,
        model_metrics=model_metrics(base, candidate),
        findings=judged.findings,
        verdict=judged.verdict,
        verdict_reasons=judged.reasons,
        options={**options.to_dict(), "policy": policy.to_dict()},
        suppressed=judged.suppressed,
    )


def attach_reference(
    result: AuditResult, model_path: str, reference_path: str, options: AuditOptions | None = None, progress: Any | None = None
) -> None:
    """Add quantization-damage fields to an audit: each layer against its float reference layer.

    Sets `reference` on every matched layer of `result` (delta = audited − reference) and the
    reference model's identity and unmatched layers on the result itself.
    """
    options = options or AuditOptions()
    reference = audit(reference_path, options, progress)
    pairs, matching = _measure_all(reference_path, reference, model_path, result, options, progress)
    by_id = {layer.id: layer for layer in result.layers}
    for p in pairs:
        by_id[p.candidate_id].reference = {
            "layer": p.base,
            "match": p.match,
            "status": p.status,
            "delta_alpha": p.delta.get("alpha"),
            "delta_alpha_weighted": p.delta.get("alpha_weighted"),
            "delta_log_norm": p.delta.get("log_norm"),
            "delta_log_spectral_norm": p.delta.get("log_spectral_norm"),
            "top_sv_rel_change": p.top_sv_rel_change,
            "relative_distance": p.relative_distance,
            "subspace_overlap": p.subspace_overlap,
        }
    result.reference = {
        "model": reference.model.to_dict(),
        "matched": len(pairs),
        "unmatched": {
            "reference": [layer.name for layer in matching.unmatched_base],
            "model": [layer.name for layer in matching.unmatched_candidate],
        },
    }
