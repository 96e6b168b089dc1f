"""The one place that orchestrates an audit: load → matrices → spectra → metrics → findings.

Progress is reported through a small callback interface so the CLI can show a bar while the
library stays silent; nothing here prints.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from wwaudit.layer_metrics import MEAN_METRICS
from wwaudit.rules.findings import ALPHA_BAND, POOR_FIT_D
from wwaudit.rules.judge import judge
from wwaudit.rules.baseline import Baseline
from wwaudit.rules.phases import assign_phases
from wwaudit.rules.policy import Policy
from wwaudit.ingest.plan import LayerSpec, safe_name, storage_dtype
from wwaudit.ingest.sources import ModelSource, open_source
from wwaudit.engine.limits import memory_refusal, working_set_bytes
from wwaudit.options import AuditOptions
from wwaudit.ingest.quant import describe as describe_quantization
from wwaudit.ingest.quant import storage_noise
from wwaudit.ingest.tensors import numpy_dtype
from wwaudit.records import AuditResult, Coverage, LayerResult, short_name
from wwaudit.engine.scheduler import (
    LayerExecutor,
    LayerOutcome,
    LayerTask,
    Progress,
    SilentProgress,
    estimate_cost,
    run_layers,
)
from wwaudit.spectral.extra_metrics import check_fix_fingers
from wwaudit.spectral.spectra import Backend, check_backend
from wwaudit.errors import InputError, UsageError


# A weight consumed by 100,000 nodes lists at most this many of them (and how many more).
MAX_USED_BY = 50
# Beyond this many skipped non-weight tensors (biases, shapes, scalars...), the rest are counted
# by reason in the summary instead of listed one by one: 100,000 tiny initializers made a 137 MB JSON.
MAX_LISTED_SKIPPED = 1000


def _used_by(names: list[str]) -> list[str]:
    shown = [short_name(safe_name(u)) for u in names[:MAX_USED_BY]]
    return shown + ([f"… and {len(names) - MAX_USED_BY} more"] if len(names) > MAX_USED_BY else [])


def _layer_result(index: int, spec: LayerSpec) -> LayerResult:
    tensor = spec.tensor
    result = LayerResult(
        id=index,
        name=short_name(safe_name(spec.name)),
        op=spec.op,
        tensor=short_name(safe_name(tensor.name)),
        kind=spec.view.kind if spec.view else "none",
        shape=list(tensor.dims),
        dtype=storage_dtype(tensor),
        quantization=describe_quantization(spec.source),
        status="skipped" if spec.skipped else "ok",
        reason=spec.reason,
        used_by=_used_by(spec.used_by),
        notes=list(spec.notes),
    )
    if tensor.scope:
        result.notes.append(f"in {short_name(tensor.scope)}")
    if not spec.skipped:
        result.N, result.M, result.slices = spec.shape_info()
    return result


def _working_set(spec: LayerSpec, layer: LayerResult, options: AuditOptions) -> int:
    """The layer task's estimated peak memory (limits.working_set_bytes), from shapes and dtypes only."""
    stored = numpy_dtype(spec.tensor.data_type) if spec.tensor.is_float else None
    native = stored is not None and stored in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
    itemsize = stored.itemsize if stored is not None and native and not spec.source.quantized else 4
    in_memory = not spec.tensor.is_mapped or not native or spec.source.quantized
    return working_set_bytes(
        spec.tensor.size, layer.N or 0, layer.M or 0, itemsize, in_memory, not options.fast, layer.slices or 1
    )


def _selected(spec: LayerSpec, pattern: re.Pattern[str] | None) -> bool:
    return pattern is None or bool(pattern.search(spec.name) or pattern.search(spec.tensor.name))


def _apply(layer: LayerResult, outcome: LayerOutcome) -> None:
    """Copy one layer's analysis (or read error) onto its result entry."""
    if outcome.analysis is None:
        layer.status, layer.reason, layer.problem = "error", outcome.error, outcome.problem
        return
    analysis = outcome.analysis
    layer.status = analysis.status
    layer.reason = analysis.reason
    layer.problem = analysis.problem
    layer.metrics.update(analysis.metrics)
    layer.notes.extend(analysis.notes)
    if analysis.spectrum is not None:
        layer.evals = analysis.spectrum.evals
    layer.random_evals = analysis.random_evals
    layer.row_hashes = analysis.row_hashes


def audit(
    path: str,
    options: AuditOptions | None = None,
    progress: Progress | None = None,
    executor: LayerExecutor | None = None,
    policy: Policy | None = None,
    baseline: Baseline | None = None,
) -> AuditResult:
    """Audit the model at `path` (any format `ingest.sources` reads); raises InputError/UsageError for unusable input.

    Layers run on `options.workers` worker processes, or on `executor` when given (any
    concurrent.futures-style executor, e.g. Dask's `Client.get_executor()`; the caller owns it).
    """
    options = options or AuditOptions()
    prepared = prepare(path, options)
    t0 = time.perf_counter()
    outcomes = run_layers(prepared.tasks, progress or SilentProgress(), options.workers, executor)
    return finish(prepared, outcomes, time.perf_counter() - t0, policy, baseline)


@dataclass
class PreparedAudit:
    """A model opened and planned, its layer tasks not run yet: `audit` runs them at once, an
    audit of several models (engine/zoo.py) schedules the tasks of all its models together."""

    source: ModelSource
    planned: list[LayerSpec]
    specs: list[LayerSpec]
    layers: list[LayerResult]
    unlisted: dict[str, int]
    tasks: list[LayerTask]
    options: AuditOptions
    load_seconds: float


def prepare(path: str, options: AuditOptions) -> PreparedAudit:
    """Open and plan the model at `path`: its result entries and one task per analysable layer."""
    check_backend(Backend.of(options))
    check_fix_fingers(options.fix_fingers)
    try:
        pattern = re.compile(options.layers) if options.layers else None
    except re.error as exc:
        raise UsageError(f"--layers: invalid regular expression: {exc}") from None
    t0 = time.perf_counter()
    source = open_source(path)
    planned = source.layers(options.max_memory)
    specs = [s for s in planned if _selected(s, pattern)]
    layers, unlisted = listed_layers(specs)
    tasks = _plan_tasks(layers, specs, options)
    return PreparedAudit(source, planned, specs, layers, unlisted, tasks, options, time.perf_counter() - t0)


def finish(
    prepared: PreparedAudit,
    outcomes: list[LayerOutcome],
    analyse_seconds: float,
    policy: Policy | None = None,
    baseline: Baseline | None = None,
) -> AuditResult:
    """The result of a prepared audit from its layers' outcomes: metrics, phases, findings, verdict."""
    layers, source, options = prepared.layers, prepared.source, prepared.options
    by_id = {layer.id: layer for layer in layers}
    for outcome in outcomes:
        _apply(by_id[outcome.index], outcome)
    assign_phases(layers)
    policy = policy or Policy()
    coverage = measure_coverage(prepared.planned, prepared.specs, layers)
    judged = judge(layers, source.problems, policy, baseline, coverage, source.integrity)
    return AuditResult(
        model=source.info(),
        layers=layers,
        findings=judged.findings,
        verdict=judged.verdict,
        verdict_reasons=judged.reasons,
        options={**options.to_dict(), "policy": policy.to_dict(), "baseline": baseline.name if baseline else None},
        summary={
            **summarise(layers, judged.verdict, policy.alpha_band()),
            **coverage.to_dict(),
            **judged.counts(),
            **_unlisted_summary(prepared.unlisted),
        },
        timings={"load_s": prepared.load_seconds, "analyse_s": analyse_seconds},
        suppressed=judged.suppressed,
    )


def listed_layers(specs: list[LayerSpec]) -> tuple[list[LayerResult], dict[str, int]]:
    """Result entries for every weight and the first MAX_LISTED_SKIPPED non-weight tensors.

    Non-weight entries (biases, shape vectors, scalars, unused tensors: skipped by the plan) past
    the cap are counted by reason instead (at most 20 reasons, the rest as 'other'), so the
    outputs stay proportional to what a reader needs and the summary says how many were left
    out. Ids stay the specs' indices: a gap marks an entry that is counted, not listed.
    """
    kept: list[LayerResult] = []
    unlisted: dict[str, int] = {}
    seen = 0
    for index, spec in enumerate(specs):
        if spec.skipped:
            seen += 1
            if seen > MAX_LISTED_SKIPPED:
                reason = short_name(spec.reason or "skipped", 120)
                key = reason if reason in unlisted or len(unlisted) < 20 else "other"
                unlisted[key] = unlisted.get(key, 0) + 1
                continue
        kept.append(_layer_result(index, spec))
    return kept, unlisted


def _unlisted_summary(unlisted: dict[str, int]) -> dict[str, object]:
    """Summary keys for the skipped non-weight tensors left out of the listing (none when all are listed)."""
    if not unlisted:
        return {}
    return {"unlisted_skipped": sum(unlisted.values()), "unlisted_skipped_reasons": unlisted}


def _plan_tasks(layers: list[LayerResult], specs: list[LayerSpec], options: AuditOptions) -> list[LayerTask]:
    """One task per analysable layer; layers over --max-evals or --max-memory are skipped (problem 'limit').

    A layer's id is its spec's index (listed_layers may leave out non-weight entries, never weights).
    """
    tasks = []
    for layer in layers:
        spec = specs[layer.id]
        if spec.skipped:
            continue
        if options.max_evals is not None and (layer.M or 0) * (layer.slices or 1) > options.max_evals:
            layer.status, layer.reason = "skipped", f"more than --max-evals {options.max_evals} eigenvalues"
            layer.problem = "limit"
            continue
        too_big = memory_refusal(_working_set(spec, layer, options), options.max_memory)
        if too_big:
            layer.status, layer.reason, layer.problem = "skipped", too_big, "limit"
            continue
        try:  # reads the scales: a data file cut short spoils this layer, not the audit
            noise = storage_noise(spec.source)
        except InputError as exc:
            layer.status, layer.reason, layer.problem = "error", str(exc), "unreadable"
            continue
        cost = estimate_cost(layer.N or 0, layer.M or 0, layer.slices or 1)
        tasks.append(LayerTask(layer.id, layer.name, spec, layer.kind, noise, options, cost))
    return tasks


def measure_coverage(planned: list[LayerSpec], selected: list[LayerSpec], layers: list[LayerResult]) -> Coverage:
    """How many of the file's weights (and their parameters) were analysed, and why not the rest.

    A tensor cut into several layers (LSTM gates, packed Q/K/V) shares its parameters out evenly
    among them, so the parameter counts add up to the file's weight parameters exactly. Results
    are matched to their specs by id (the spec's index among the selected ones).
    """
    weights = [s for s in planned if s.weight]
    per_tensor: dict[str, int] = {}
    for spec in weights:
        per_tensor[spec.tensor.key] = per_tensor.get(spec.tensor.key, 0) + 1
    share = {id(s): s.tensor.size / per_tensor[s.tensor.key] for s in weights}
    chosen = {id(s) for s in selected}
    results = {id(selected[layer.id]): layer for layer in layers}
    analysed = [s for s in weights if id(s) in results and results[id(s)].analysed]
    limited = [s for s in weights if id(s) in results and results[id(s)].problem == "limit"]
    return Coverage(
        weights=len(weights),
        analysed=len(analysed),
        skipped_for_limit=len(limited),
        not_selected=sum(1 for s in weights if id(s) not in chosen),
        not_analysable=sum(1 for s in weights if id(s) in chosen and s.skipped),
        weight_parameters=int(round(sum(share.values()))),
        analysed_parameters=int(round(sum(share[id(s)] for s in analysed))),
    )


def _reliable_fit(layer: LayerResult) -> bool:
    """A fit the rules themselves would judge alpha by (status ok, KS distance within WW005's limit)."""
    d = layer.metric("D")
    return layer.status == "ok" and d is not None and bool(np.isfinite(d)) and d <= POOR_FIT_D


def _mean(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def summarise(layers: list[LayerResult], verdict: str, band: tuple[float, float] = ALPHA_BAND) -> dict:
    """Model-level averages over analysed layers (weightwatcher's summary convention): the means of
    layer_metrics.MEAN_METRICS, over the fitted or the analysed layers, and the share of fitted
    alphas inside the policy's band."""
    analysed = [layer for layer in layers if layer.analysed]
    fitted = [layer for layer in layers if _reliable_fit(layer)]  # headline means: reliable fits only
    alphas = [layer.metric("alpha") for layer in fitted if layer.metric("alpha") is not None]
    in_band = [a for a in alphas if band[0] <= a <= band[1]]
    over = {"fitted": fitted, "analysed": analysed}
    return {
        "layers": len(layers),
        "analysed": len(analysed),
        "skipped": sum(1 for layer in layers if layer.status == "skipped"),
        "errors": sum(1 for layer in layers if layer.status == "error"),
        "fit_failed": sum(1 for layer in layers if layer.status == "fit_failed"),
        "reliable_fits": len(fitted),
        **{f"{m.name}_mean": _mean([layer.metric(m.name) for layer in over[m.mean_over]]) for m in MEAN_METRICS},
        "share_alpha_in_band": (len(in_band) / len(alphas)) if alphas else None,
        "verdict": verdict,
    }
