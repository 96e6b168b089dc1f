"""Analyse one layer's matrices: spectrum, then metrics. No ONNX here; matrices in, numbers out.

Per layer, in order: the pooled ESD (``spectra``), the conv normalisation and scale metrics
(``metrics``), the power-law tail fit (``powerlaw_fit``; a failed fit gives status ``fit_failed``
and alpha None), the Marchenko-Pastur bulk fit (``mp_fit``), and unless ``options.fast``: the
correlation traps of an element-shuffled copy (``traps``) and the comparison of the tail with a
truncated power law, lognormal and exponential (``distributions``). Everything is a pure function
of the matrices and the options, so it runs the same in worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from wwaudit.spectral.distributions import compare_distributions
from wwaudit.streamed import row_chunks
from wwaudit.spectral.metrics import CONV_NORM_FACTOR, alpha_metrics, matrix_entropy, scale_metrics
from wwaudit.layer_metrics import MP_METRICS
from wwaudit.spectral.mp_fit import fit_mp
from wwaudit.options import AuditOptions
from wwaudit.spectral.powerlaw_fit import PowerLawFit, fit_power_law
from wwaudit.spectral.extra_metrics import alpha_hill, detx, fit_with_fingers, random_columns, sv_min
from wwaudit.spectral.trap_detail import TRAP_DETAIL_KEYS, trap_detail
from wwaudit.spectral.vectors import vector_metrics
from wwaudit.spectral.slices import slice_metrics
from wwaudit.spectral.spectra import Backend, Spectrum, Storage, layer_spectrum
from wwaudit.spectral.structure import structure_and_rows
from wwaudit.spectral.traps import TrapResult, correlation_traps

_RANDOM_KEYS = ("num_traps", "rand_distance", "rand_bulk_max", "rand_lambda_max", "num_rand_spikes", "rand_lambda_ratio")
VECTOR_SLICES_NOTE = (
    "correlation traps and the random reference do not apply: every slice is a vector, and a shuffled "
    "vector has the same singular value"
)
_COMPARE_KEYS = ("best_fit", "tpl_alpha", "tpl_lambda") + tuple(
    f"{k}_{s}" for s in ("tpl", "lognormal", "exponential") for k in ("R", "p")
)


@dataclass
class LayerAnalysis:
    """What the analysis of one layer produced; status 'error' carries the reason.

    ``spectrum.evals`` is the ESD the metrics were computed on (conv layers already scaled by
    CONV_NORM_FACTOR); ``random_evals`` the ESD of one element-shuffled copy (None with --fast).
    """

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    spectrum: Spectrum | None = None
    random_evals: np.ndarray | None = None
    # Machine-readable cause of status 'error' (results.LayerResult.problem): rules key on it,
    # never on the wording of `reason`.
    problem: str | None = None
    # Hashes of the first slice's output rows (spectral/structure.row_hashes): rows copied between layers.
    row_hashes: np.ndarray | None = None


def analyse_matrices(mats: list[Any], kind: str, eps: Storage | float, options: AuditOptions) -> LayerAnalysis:
    """Eigenvalues of the pooled slices and the metrics computed from them.

    `kind` is the layer kind (dense, conv, embedding, recurrent, attention): conv layers follow the
    reference's conv normalisation (see metrics.CONV_NORM_FACTOR). `eps` says how the values were
    stored (spectra.Storage, or a float format's epsilon): it sets the rank-loss noise floor.
    """
    bad, nonzero = _value_checks(mats)
    if bad:
        return LayerAnalysis("error", reason=f"weights contain {bad} NaN/Inf values", problem="nonfinite")
    if not nonzero:
        return LayerAnalysis("error", reason="all weights are zero (dead layer)", problem="zero")
    try:
        spectrum = layer_spectrum(mats, eps, options)
    except np.linalg.LinAlgError as exc:  # e.g. float64 weights near 1e154 overflow the Gram matrix
        return LayerAnalysis("error", reason=f"eigensolver failed: {exc}", problem="numeric")
    if not np.all(np.isfinite(spectrum.evals)):
        return LayerAnalysis("error", reason="eigenvalues overflow float64 (weights too large)", problem="numeric")
    structure, hashes = structure_and_rows(mats)
    scale = CONV_NORM_FACTOR if kind == "conv" else 1.0
    if scale != 1.0:
        spectrum = replace(spectrum, evals=spectrum.evals * scale, sv_max=spectrum.sv_max * float(np.sqrt(scale)))
    evals = spectrum.evals
    metrics = scale_metrics(spectrum)
    metrics.update(structure)
    metrics["entropy"] = matrix_entropy(evals, spectrum.N)
    notes: list[str] = []

    if options.fix_fingers:
        fit, finger_columns = fit_with_fingers(evals, options.fix_fingers)
        metrics.update(finger_columns)
    else:
        fit = fit_power_law(evals)
    metrics.update(fit.metrics())
    metrics.update(alpha_metrics(evals, fit.alpha))
    status = "ok" if fit.status == "ok" else "fit_failed"
    reason = fit.reason  # why the fit failed (None when it did not): findings quote it

    try:
        metrics.update(fit_mp(evals, spectrum.N, spectrum.M).metrics())
    except ValueError as exc:
        metrics.update(dict.fromkeys(MP_METRICS))
        notes.append(f"MP fit failed: {exc}")

    random_evals, traps = None, None
    if options.fast:
        metrics.update(dict.fromkeys(_RANDOM_KEYS + _COMPARE_KEYS))
    else:
        traps = _random_reference(mats, spectrum, scale, options, metrics, notes)
        random_evals = traps.random_evals if traps is not None else None
        if fit.status == "ok" and fit.xmin is not None and fit.alpha is not None:  # a fit that is ok has both
            metrics.update(compare_distributions(evals, fit.xmin, fit.alpha))
        else:
            metrics.update(dict.fromkeys(_COMPARE_KEYS))
    metrics.update(optional_metrics(mats, evals, scale, fit, traps, options))
    if options.per_slice:
        metrics.update(slice_metrics(mats, kind, eps, Backend.of(options)))
    return LayerAnalysis(
        status,
        metrics=metrics,
        reason=reason,
        notes=notes,
        spectrum=spectrum,
        random_evals=random_evals,
        row_hashes=hashes,
    )


def _value_checks(mats: list[Any]) -> tuple[int, bool]:
    """How many values are NaN/Inf, and whether any is non-zero: in row chunks, so a streamed or
    memory-mapped matrix is never held whole (nor a full-size boolean temporary made)."""
    bad, nonzero = 0, False
    for W in mats:
        for chunk in row_chunks(W):
            finite = np.isfinite(chunk)
            if not finite.all():
                bad += int(finite.size - np.count_nonzero(finite))
            nonzero = nonzero or bool(np.any(chunk))
    return bad, nonzero


def optional_metrics(
    mats: list[np.ndarray], evals: np.ndarray, scale: float, fit: PowerLawFit, traps: TrapResult | None, options: AuditOptions
) -> dict[str, Any]:
    """The opt-in columns the options ask for (layer_metrics.OPTIONAL_METRICS; fingers are set with the fit)."""
    out: dict[str, Any] = {}
    if options.hill:
        out["alpha_hill"] = alpha_hill(evals)
    if options.detx:
        out.update(detx(evals, fit.num_pl_spikes))
    if options.ww_extras:
        out["sv_min"] = sv_min(evals)
        out.update(random_columns(evals, traps.random_evals if traps else None, traps.max_random if traps else None))
    if options.vectors:
        out.update(vector_metrics(mats, fit.num_pl_spikes))
    if options.trap_detail:
        none = dict.fromkeys(TRAP_DETAIL_KEYS)  # --fast, or vector slices: no shuffled copy
        out.update(trap_detail(mats, traps, options.seed, scale, Backend.of(options)) if traps else none)
    return out


def _random_reference(
    mats: list[np.ndarray], spectrum: Spectrum, scale: float, options: AuditOptions, metrics: dict[str, Any], notes: list[str]
) -> TrapResult | None:
    """Traps and the random reference from an element-shuffled copy (its ESD is for the plots).

    When every slice is a vector (a conv with one input channel per kernel position), shuffling
    leaves each singular value unchanged: the shuffled spectrum equals the layer's, so neither
    traps nor randomness can be judged, and the metrics are null with a note saying why.
    """
    if all(min(W.shape) == 1 for W in mats):
        metrics.update(dict.fromkeys(_RANDOM_KEYS))
        notes.append(VECTOR_SLICES_NOTE)
        return None
    evals = spectrum.evals
    traps = correlation_traps(mats, evals, spectrum.N, spectrum.M, options.seed, scale, Backend.of(options))
    metrics["num_traps"] = traps.num_traps
    metrics["rand_distance"] = traps.rand_distance
    metrics["rand_bulk_max"] = traps.rand_bulk_max
    metrics.update(traps.reference_metrics(evals))
    return traps
