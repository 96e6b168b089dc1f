"""Rules: each with an id, a default severity, why it matters and what to do (judge.py applies them).

The registry is the single list every output shows (`wwaudit rules`, SARIF rules, the report's
findings section). A rule's `check` reads finished layer results only; it never computes spectra.
Thresholds are parameters with defaults here, so a team's policy file (rules/policy.py) can move
them without touching code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any, Callable, Iterable, Mapping, Sequence

from wwaudit.records import finite_or_none, IntegrityIssue, LayerResult
from wwaudit.rules.integrity import integrity_rules

SEVERITIES = ("info", "warning", "error")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
FAIL_ON_LEVELS = SEVERITIES + ("never",)
ALPHA_LOW = 2.0
ALPHA_HIGH = 6.0
# The band where well-trained layers' alpha usually lies: WW001's alpha_min and WW002's alpha_max
# by default; a policy that moves those moves the band in the summary, the plots and the report text.
ALPHA_BAND = (ALPHA_LOW, ALPHA_HIGH)
# KS distance above which a power-law fit is too poor to judge a layer by its alpha.
POOR_FIT_D = 0.15
# Iglewicz & Hoaglin's modified z-score: 0.6745·(x − median)/MAD; |z| > 3.5 is their outlier cut.
_MAD_TO_SIGMA = 0.6745

Hit = tuple[LayerResult | None, str]


@dataclass(frozen=True)
class RuleContext:
    """What the rules read: the finished layer results and the graph walker's problems."""

    layers: Sequence[LayerResult]
    graph_problems: Sequence[str] = ()
    integrity_problems: Sequence[IntegrityIssue] = ()  # payload ambiguities (rules/integrity.py)


@dataclass(frozen=True)
class Rule:
    """A registered check. `scope` is 'layer' (one finding per layer) or 'model' (layer is None)."""

    id: str
    title: str
    severity: str
    scope: str
    rationale: str
    remedy: str
    check: Callable[[RuleContext, Mapping[str, float]], Iterable[Hit]] = field(repr=False, compare=False)
    params: Mapping[str, float] = field(default_factory=dict)
    param_help: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The rule as plain data (for `wwaudit rules --format json`, SARIF and the report)."""
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "scope": self.scope,
            "rationale": self.rationale,
            "remedy": self.remedy,
            "params": {k: self.params[k] for k in sorted(self.params)},
            "param_help": {k: self.param_help[k] for k in sorted(self.param_help)},
        }


def _per_layer(fn: Callable[[LayerResult, Mapping[str, float]], str | None]) -> Callable[[RuleContext, Mapping[str, float]], Iterable[Hit]]:
    """Lift a one-layer check into a rule check over all layers, in layer order."""

    def check(ctx: RuleContext, params: Mapping[str, float]) -> Iterable[Hit]:
        for layer in ctx.layers:
            message = fn(layer, params)
            if message:
                yield layer, message

    return check


def _reliable_alpha(layer: LayerResult, p: Mapping[str, float]) -> float | None:
    """Alpha when the power-law fit is good enough to judge the layer by, else None.

    weightwatcher labels any alpha below 2 over-trained, even from a fit whose KS distance says
    the tail is not a power law (typically a 10-output classifier head with 10 eigenvalues): such
    a layer gets WW005 (poor fit) instead, so a reviewer is not told a well-trained head is over-trained.
    """
    alpha = finite_or_none(layer.metric("alpha"))
    d = finite_or_none(layer.metric("D"))
    if layer.status != "ok" or alpha is None or (d is not None and d > p["max_D"]):
        return None
    return alpha


def _over_trained(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    alpha = _reliable_alpha(layer, p)
    if alpha is not None and alpha < p["alpha_min"]:
        return f"{layer.name}: alpha = {alpha:.2f} < {p['alpha_min']:g} (very heavy-tailed ESD: possibly over-trained)"
    return None


def _under_trained(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    alpha = _reliable_alpha(layer, p)
    if alpha is not None and alpha > p["alpha_max"]:
        return f"{layer.name}: alpha = {alpha:.2f} > {p['alpha_max']:g} (ESD close to random: possibly under-trained)"
    return None


def _is_degenerate(layer: LayerResult) -> bool:
    """Rank ≤ 1 in every slice: a constant (or rank-one) matrix carries a single direction."""
    rank = layer.metric("matrix_rank")
    n = layer.metric("num_evals")
    slices = layer.slices or 1
    return layer.analysed and rank is not None and bool(n) and n > slices and rank <= slices


def _rank_collapse(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    loss = layer.metric("rank_loss")
    n = layer.metric("num_evals")
    if not layer.analysed or not loss or not n or _is_degenerate(layer):
        return None  # a degenerate layer is reported once, as WW007
    if loss / n > p["max_rank_loss_fraction"]:
        return f"{layer.name}: {loss} of {n} singular values are numerically zero (rank collapse)"
    return None


def _traps(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    traps = layer.metric("num_traps")
    if _is_degenerate(layer):
        return None  # shuffling a constant matrix leaves it constant: reported once, as WW007
    if layer.analysed and traps is not None and traps > p["max_traps"]:
        return (f"{layer.name}: {int(traps)} correlation trap{'s' if traps != 1 else ''} "
                "(eigenvalues of the element-shuffled matrix far above the Marchenko-Pastur edge)")
    return None


def _poor_fit(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    if _is_degenerate(layer):
        return None  # one non-zero eigenvalue has no tail to fit: reported once, as WW007
    if layer.status == "fit_failed":
        why = f" ({layer.reason})" if layer.reason else ""
        return f"{layer.name}: the power-law fit of the ESD tail failed{why}; alpha-based rules do not apply"
    d = finite_or_none(layer.metric("D"))
    if layer.status == "ok" and d is not None and d > p["max_D"]:
        return f"{layer.name}: poor power-law fit, KS distance D = {d:.3f} > {p['max_D']:g}; alpha is not used for WW001/WW002"
    return None


def _nan_inf(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    if layer.status == "error" and layer.problem == "nonfinite":
        return f"{layer.name}: {layer.reason}; the layer cannot be analysed"
    return None


def _unanalysable(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    if layer.status == "error" and layer.problem in ("unreadable", "numeric", "internal"):
        return f"{layer.name}: {layer.reason}; this weight was not audited"
    return None


def _dead(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    if layer.status == "error" and layer.problem == "zero":
        return f"{layer.name}: {layer.reason}"
    lam_max = layer.metric("lambda_max")
    if layer.analysed and lam_max is not None and lam_max == 0:
        return f"{layer.name}: all weights are zero (dead layer)"
    if _is_degenerate(layer):
        return (f"{layer.name}: rank {layer.metric('matrix_rank')} over {layer.slices or 1} slice(s) of "
                f"{layer.metric('num_evals')} eigenvalues: constant (or rank-one) weights, the layer passes one direction only")
    return None


def _spectral_outliers(ctx: RuleContext, p: Mapping[str, float]) -> Iterable[Hit]:
    values = [(layer, finite_or_none(layer.metric("log_spectral_norm"))) for layer in ctx.layers if layer.analysed]
    values = [(layer, v) for layer, v in values if v is not None]
    if len(values) < p["min_layers"]:
        return
    med = median(v for _, v in values)
    mad = median(abs(v - med) for _, v in values)
    if mad <= 0:
        return
    for layer, v in values:
        z = _MAD_TO_SIGMA * (v - med) / mad
        if abs(z) > p["max_robust_z"]:
            side = "above" if z > 0 else "below"
            yield layer, (f"{layer.name}: log10 spectral norm {v:.2f} is far {side} the model's median {med:.2f} "
                          f"(robust z = {z:+.1f}, limit {p['max_robust_z']:g})")


def _alpha_hat(ctx: RuleContext, p: Mapping[str, float]) -> Iterable[Hit]:
    vals = [finite_or_none(layer.metric("alpha_weighted")) for layer in ctx.layers if layer.status == "ok"]
    vals = [v for v in vals if v is not None]
    if not vals:
        return
    hat = sum(vals) / len(vals)
    if not p["alpha_hat_min"] <= hat <= p["alpha_hat_max"]:
        yield None, (f"model: alpha-hat (mean alpha·log10 lambda_max over {len(vals)} layers) = {hat:.2f}, "
                     f"outside the usual range [{p['alpha_hat_min']:g}, {p['alpha_hat_max']:g}]")


def _graph(ctx: RuleContext, p: Mapping[str, float]) -> Iterable[Hit]:
    for problem in ctx.graph_problems:
        yield None, f"graph: {problem}"


RULES: tuple[Rule, ...] = (
    Rule("WW000", "Graph problem", "warning", "model",
         "The graph walker met something it could not follow (dangling references, unsupported constructs): "
         "weights behind it may be missing from the audit.",
         "Check the export; run `onnx.checker` on the model; report the construct if the model is valid.",
         _graph),
    Rule("WW001", "Over-trained layer (alpha too small)", "warning", "layer",
         "An ESD tail exponent below 2 means a very heavy-tailed spectrum: a few directions dominate, "
         "typical of over-fitting or of correlation traps.",
         "Check training length, learning rate and regularisation of this layer; compare with earlier checkpoints.",
         _per_layer(_over_trained), {"alpha_min": ALPHA_LOW, "max_D": POOR_FIT_D},
         {"alpha_min": "fires when alpha < alpha_min", "max_D": "only when the fit's KS distance D <= max_D (else WW005)"}),
    Rule("WW002", "Under-trained layer (alpha too large)", "warning", "layer",
         "An ESD tail exponent above 6 means the spectrum is close to that of a random matrix: the layer "
         "has learned little structure.",
         "Train longer, or check that this layer receives gradient (frozen, dead or mis-initialised layers look like this).",
         _per_layer(_under_trained), {"alpha_max": ALPHA_HIGH, "max_D": POOR_FIT_D},
         {"alpha_max": "fires when alpha > alpha_max", "max_D": "only when the fit's KS distance D <= max_D (else WW005)"}),
    Rule("WW003", "Rank collapse", "warning", "layer",
         "Singular values that are numerically zero mean the layer maps onto a lower-dimensional space; "
         "Martin & Mahoney observe this in over-regularised models, never in well-trained ones.",
         "Reduce weight decay or norm constraints; check for pruning or dead units.",
         _per_layer(_rank_collapse), {"max_rank_loss_fraction": 0.0},
         {"max_rank_loss_fraction": "fires when rank_loss / num_evals exceeds this share"}),
    Rule("WW004", "Correlation traps", "warning", "layer",
         "Eigenvalues of the element-shuffled weights far beyond the Marchenko-Pastur bulk show large, "
         "localised weights that randomisation does not remove: often a learning rate that was too large.",
         "Look at the largest weights of this layer; lower the learning rate or clip gradients; compare checkpoints.",
         _per_layer(_traps), {"max_traps": 0}, {"max_traps": "fires when num_traps > max_traps"}),
    Rule("WW005", "Power-law fit failed or poor", "info", "layer",
         "When the ESD tail does not follow a power law (fit failed, or KS distance D large), alpha and the "
         "rules built on it say little about this layer.",
         "Read this layer's ESD plot; compare the distribution fits (truncated power law, log-normal) in the report.",
         _per_layer(_poor_fit), {"max_D": POOR_FIT_D}, {"max_D": "fires when the fit's KS distance D > max_D"}),
    Rule("WW006", "NaN or Inf weights", "error", "layer",
         "Weights with NaN or Inf make every output of the model undefined.",
         "Re-export the model from a checkpoint taken before the divergence; check the exporter's dtype casts.",
         _per_layer(_nan_inf)),
    Rule("WW007", "Dead layer (all-zero or constant weights)", "error", "layer",
         "A weight matrix that is all zero passes no signal; a constant (rank-one) one passes a single direction: "
         "the layer is dead or was never trained.",
         "Check the export (weights not copied, initialiser left in place) and the training (collapsed layer).",
         _per_layer(_dead)),
    Rule("WW008", "Spectral-norm outlier", "warning", "layer",
         "A layer whose largest eigenvalue is orders of magnitude away from the model's other layers "
         "(robust z-score of log10 lambda_max) dominates or starves the signal path.",
         "Check this layer's initialisation, normalisation and weight decay; compare with the same layer in earlier checkpoints.",
         _spectral_outliers, {"max_robust_z": 3.5, "min_layers": 5},
         {"max_robust_z": "fires when |0.6745·(x − median)/MAD| of log_spectral_norm exceeds this",
          "min_layers": "needs at least this many analysed layers"}),
    Rule("WW009", "Model alpha-hat out of the usual range", "info", "model",
         "alpha-hat, the mean of alpha·log10 lambda_max over layers, tracks model quality within a model family; "
         "values outside [0, 8] mean tiny-scaled weights (negative) or large random-like layers (large).",
         "Compare alpha-hat with other checkpoints or models of the same architecture before drawing conclusions.",
         _alpha_hat, {"alpha_hat_min": 0.0, "alpha_hat_max": 8.0},
         {"alpha_hat_min": "fires when alpha-hat < alpha_hat_min", "alpha_hat_max": "fires when alpha-hat > alpha_hat_max"}),
    Rule("WW010", "Weight not audited (unreadable or analysis failed)", "error", "layer",
         "A weight whose data cannot be read (external data missing or inconsistent, raw data of the wrong "
         "size) or whose spectrum cannot be computed was not audited: signing the model off would sign off "
         "weights nobody looked at, and a model whose data is broken does not run as stored.",
         "Fix the export or the external data files (sizes, offsets) and audit again; the layer's reason names the problem.",
         _per_layer(_unanalysable)),
) + integrity_rules(Rule)

RULES_BY_ID = {rule.id: rule for rule in RULES}


def alpha_band(policy_settings: Mapping[str, Any] | None) -> tuple[float, float]:
    """The alpha band of a policy's settings (Policy.settings(), as echoed in a result's
    `options.policy`): WW001's alpha_min to WW002's alpha_max, ALPHA_BAND where not set."""
    rules = (policy_settings or {}).get("rules") or {}
    low = ((rules.get("WW001") or {}).get("params") or {}).get("alpha_min", ALPHA_LOW)
    high = ((rules.get("WW002") or {}).get("params") or {}).get("alpha_max", ALPHA_HIGH)
    return float(low), float(high)


def band_text(band: tuple[float, float]) -> str:
    """The band as the report writes it: [2, 6]."""
    return f"[{band[0]:g}, {band[1]:g}]"
