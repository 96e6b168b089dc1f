"""Rules: each with an id, a default severity, why it matters and what to do; and the verdict.

The registry is the single list every output shows (`wwaudit rules`, SARIF rules, the report's
findings section). A rule's `check` reads finished layer results only; it never computes spectra.
Thresholds are parameters with defaults here, so a team's policy file (rules/policy.py) can move
them without touching code; rules/judge.py applies the policy and gives the verdict.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from wwaudit.records import LayerResult, finite_or_none
from wwaudit.rules import relative
from wwaudit.rules.compare_rules import COMPARE_RULES
from wwaudit.rules.integrity import integrity_rules
from wwaudit.rules.base import (  # noqa: F401  (re-exported: the registry's public names)
    FAIL_ON_LEVELS,
    SEVERITIES,
    SEVERITY_RANK,
    Hit,
    Rule,
    RuleContext,
    per_layer,
)

ALPHA_LOW = 2.0
ALPHA_HIGH = 6.0
# The articles' band of well-trained layers; a policy moves it through WW001/WW002 (alpha_band).
ALPHA_BAND = (ALPHA_LOW, ALPHA_HIGH)
# KS distance above which a power-law fit is too poor to judge a layer by its alpha.
POOR_FIT_D = 0.15


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


def _alpha_outside(layer: LayerResult, p: Mapping[str, float], low: bool) -> str | None:
    """alpha below `alpha_min` (low) or above `alpha_max`, judged with its confidence interval.

    With `use_ci` (the default) the whole 95 % interval must lie beyond the threshold, so a short
    tail whose alpha is uncertain by ±1 is not labelled on its point estimate; embeddings are not
    judged (their alpha is routinely below 2 in good models: GPT-2's position table 1.55, MiniLM's
    word table 1.55). The weightwatcher preset turns both off and judges the point estimate.
    """
    alpha = _reliable_alpha(layer, p)
    if alpha is None or (layer.kind == "embedding" and p["use_ci"]):
        return None
    if p["use_ci"]:
        bound = finite_or_none(layer.metric("alpha_ci_high" if low else "alpha_ci_low"))
        bound = alpha if bound is None else bound
    else:
        bound = alpha
    ci = ""
    lo, hi = finite_or_none(layer.metric("alpha_ci_low")), finite_or_none(layer.metric("alpha_ci_high"))
    if lo is not None and hi is not None:
        ci = f" (95% interval {lo:.2f}-{hi:.2f})"
    if low and bound < p["alpha_min"]:
        return (
            f"{layer.name}: alpha = {alpha:.2f}{ci} < {p['alpha_min']:g}: very heavy-tailed ESD, what weightwatcher "
            "labels over-trained (common in good attention Q/K projections)"
        )
    if not low and bound > p["alpha_max"]:
        return (
            f"{layer.name}: alpha = {alpha:.2f}{ci} > {p['alpha_max']:g}: light-tailed ESD, what weightwatcher "
            "labels under-trained"
        )
    return None


def _over_trained(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    return _alpha_outside(layer, p, low=True)


def _under_trained(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    return _alpha_outside(layer, p, low=False)


def _is_degenerate(layer: LayerResult) -> bool:
    """Rank ≤ 1 in every slice: a constant (or rank-one) matrix carries a single direction."""
    rank = layer.metric("matrix_rank")
    n = layer.metric("num_evals")
    slices = layer.slices or 1
    return layer.analysed and rank is not None and bool(n) and n > slices and rank <= slices


def _rank_collapse(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    loss = layer.metric("rank_loss") or 0
    n = layer.metric("num_evals")
    if not layer.analysed or not n or _is_degenerate(layer):
        return None  # a degenerate layer is reported once, as WW007
    beyond = max(0, loss - (layer.metric("dead_rank_loss") or 0))
    # quantized weights: values under the quantization step's noise floor are counted as zero (spectral
    # rank threshold), so there the rank loss measures the code's resolution, not a collapse
    if layer.quantization is None and beyond / n > p["max_rank_loss_fraction"] and beyond >= p["min_rank_loss"]:
        return (
            f"{layer.name}: {beyond} of {n} singular values are numerically zero ({beyond / n:.0%}, limit "
            f"{p['max_rank_loss_fraction']:.0%}) beyond those of dead units: the weights span a lower-dimensional "
            "space than their shape (truncated, copied or collapsed)"
        )
    return _dead_units(layer, p)


def _dead_units(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    share = finite_or_none(layer.metric("dead_share"))
    if share is None or share <= p["max_dead_share"]:
        return None
    rows, cols = layer.metric("dead_rows") or 0, layer.metric("dead_cols") or 0
    return (
        f"{layer.name}: {rows} output unit(s) and {cols} input(s) have all-zero weights ({share:.0%} of the layer, "
        f"limit {p['max_dead_share']:.0%}): most of the layer is dead (collapsed by weight decay, or pruned)"
    )


def _few_levels(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    """Float-stored weights that take only a handful of values per output unit: k-bit rounding.

    A unit can hold few values by being short, so the distinct values must also be a small share
    of its nonzero weights (`level_share`: 1.0 after float training, pruned or not)."""
    levels, share = layer.metric("levels_per_row"), layer.metric("level_share")
    if not layer.analysed or levels is None or layer.quantization is not None or _is_degenerate(layer):
        return None
    if (layer.M or 0) * (layer.slices or 1) < p["min_width"] or levels > p["max_levels"]:
        return None
    if share is not None and share > p["max_level_share"]:
        return None
    repeated = f", {share:.0%} of its nonzero weights distinct" if share is not None else ""
    return (
        f"{layer.name}: its output units take a median of {levels} distinct weight values{repeated} (float "
        f"storage, limit {p['max_levels']:g}): rounded to about {max(1, int(levels - 1).bit_length())} bits "
        "without a quantization op (damaged, or quantized without calibration)"
    )


def _duplicates(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    rows, cols = layer.metric("dup_rows") or 0, layer.metric("dup_cols") or 0
    n_rows = (layer.shape[0] if layer.shape else 0) or 1
    if not layer.analysed or _is_degenerate(layer) or rows + cols < p["min_duplicates"]:
        return None
    levels = layer.metric("levels_per_row")
    if layer.quantization is not None or (levels is not None and levels < p["min_levels"]):
        return None  # coarse codes repeat whole rows by chance (an int8 LSTM with 12 values a row: 12 copies)
    parts = [f"{n} {what}{'s' if n != 1 else ''}" for n, what in ((rows, "output row"), (cols, "input column")) if n]
    if rows + cols < p["min_share"] * n_rows:
        return None
    return (
        f"{layer.name}: {' and '.join(parts)} exactly repeat another of the same matrix (summed over "
        f"{layer.slices or 1} slice(s)): copied weights, from a merge or export bug, or heads the exporter expanded"
    )


def _traps(layer: LayerResult, p: Mapping[str, float]) -> str | None:
    traps = layer.metric("num_traps")
    if _is_degenerate(layer):
        return None  # shuffling a constant matrix leaves it constant: reported once, as WW007
    if layer.analysed and traps is not None and traps > p["max_traps"]:
        return (
            f"{layer.name}: {int(traps)} correlation trap{'s' if traps != 1 else ''} "
            "(eigenvalues of the element-shuffled matrix far above the Marchenko-Pastur edge)"
        )
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
        return (
            f"{layer.name}: rank {layer.metric('matrix_rank')} over {layer.slices or 1} slice(s) of "
            f"{layer.metric('num_evals')} eigenvalues: constant (or rank-one) weights, the layer passes one direction only"
        )
    return None


def _alpha_hat(ctx: RuleContext, p: Mapping[str, float]) -> Iterable[Hit]:
    vals = [finite_or_none(layer.metric("alpha_weighted")) for layer in ctx.layers if layer.status == "ok"]
    vals = [v for v in vals if v is not None]
    if not vals:
        return
    hat = sum(vals) / len(vals)
    if not p["alpha_hat_min"] <= hat <= p["alpha_hat_max"]:
        yield (
            None,
            (
                f"model: alpha-hat (mean alpha·log10 lambda_max over {len(vals)} layers) = {hat:.2f}, "
                f"outside the usual range [{p['alpha_hat_min']:g}, {p['alpha_hat_max']:g}]"
            ),
        )


def _graph(ctx: RuleContext, p: Mapping[str, float]) -> Iterable[Hit]:
    for problem in ctx.graph_problems:
        yield None, f"graph: {problem}"


_RANDOM_PARAMS = {
    "min_rand_ratio": 0.85,
    "max_rand_ratio": 1.1,
    "max_rand_spikes": 0,
    "structured_ratio": 1.3,
    "min_m": 32,
    "max_unit_z": 4.0,
}
_RANDOM_HELP = {
    "min_rand_ratio": "random-like only when lambda_max >= this x the shuffled copy's top eigenvalue (a narrower "
    "spectrum than the shuffle's is structure: an intact OCR layer at 0.74)",
    "max_rand_ratio": "random-like when lambda_max <= this x the shuffled copy's largest eigenvalue (63 of the 64 re-initialised "
    "layers of the benchmark with at least 32 eigenvalues per slice: 0.93-1.08; structured trained "
    "layers >= 1.3)",
    "max_rand_spikes": "... and at most this many eigenvalues above the shuffled copy's top (0 in all 64 re-initialised "
    "layers; an intact attention projection with 1 was no random layer)",
    "structured_ratio": "a sibling counts as trained (structured) when its ratio is at least this",
    "min_m": "only layers with at least this many eigenvalues per slice are judged (smaller ones cannot be told from "
    "random: intact 8x32 convs of the benchmark looked random)",
    "max_unit_z": "... and only when the spread of its units' squared norms is within this many standard errors of what "
    "iid elements give (unit_norm_z; all 76 re-initialised layers of the benchmark: |z| <= 3.13; the intact OCR "
    "classifier's conv that looked random by its spectrum alone: -9.6)",
}


def _alpha_rule_params(name: str, value: float) -> tuple[dict[str, float], dict[str, str]]:
    """WW001's and WW002's parameters (their threshold `name`, max_D, use_ci) and their help."""
    return {name: value, "max_D": POOR_FIT_D, "use_ci": 1.0}, {
        name: "fires when alpha (with use_ci: the whole 95% interval) is beyond it; the articles' band [2, 6]. Info by "
        "default: on the judgement benchmark's intact models alpha < 2 or > 6 occurred in most models and said "
        "nothing about damage",
        "max_D": "only when the fit's KS distance D <= max_D (else WW005)",
        "use_ci": "1: judge the 95% interval and skip embeddings; 0: the point estimate, every kind (weightwatcher)",
    }


AUDIT_RULES: tuple[Rule, ...] = (
    Rule(
        "WW000",
        "Graph problem",
        "warning",
        "model",
        "The graph walker met something it could not follow (dangling references, unsupported constructs): "
        "weights behind it may be missing from the audit.",
        "Check the export; run `onnx.checker` on the model; report the construct if the model is valid.",
        _graph,
    ),
    Rule(
        "WW001",
        "Very heavy-tailed ESD (alpha below 2)",
        "info",
        "layer",
        "An ESD tail exponent below 2 is what weightwatcher labels over-trained. In real models it is common and "
        "harmless in some layer kinds (attention Q/K projections: 80-90% of LLaMA-2-70B's are below 2), so it is "
        "information, not a defect; the weightwatcher preset makes it a warning.",
        "Compare with the same layer in other checkpoints of this architecture; look at the layer's ESD plot.",
        per_layer(_over_trained),
        *_alpha_rule_params("alpha_min", ALPHA_LOW),
    ),
    Rule(
        "WW002",
        "Light-tailed ESD (alpha above 6)",
        "info",
        "layer",
        "An ESD tail exponent above 6 is what weightwatcher labels under-trained: close to a random matrix. About a "
        "quarter of a good ViT-L's layers are above 6, so on its own it is information; a layer that is really "
        "random among trained siblings is WW011, a model that is random throughout WW012.",
        "Compare with the same layer in other checkpoints; WW011/WW012 say whether it is indistinguishable from random.",
        per_layer(_under_trained),
        *_alpha_rule_params("alpha_max", ALPHA_HIGH),
    ),
    Rule(
        "WW003",
        "Rank collapse",
        "warning",
        "layer",
        "Many numerically zero singular values mean the layer maps onto a lower-dimensional space: truncated, "
        "duplicated or collapsed weights. Zero singular values from dead units (all-zero rows or columns, left "
        "by weight decay) are normal in moderation: intact models of the benchmark have layers with up to 47% "
        "dead units; most of a layer dead is the collapse.",
        "Reduce weight decay or norm constraints; check for pruning, truncation or copied rows.",
        per_layer(_rank_collapse),
        {"max_rank_loss_fraction": 0.25, "min_rank_loss": 2, "max_dead_share": 0.5},
        {
            "max_rank_loss_fraction": "fires when the rank loss beyond dead units' (rank_loss - dead_rank_loss) / "
            "num_evals exceeds this share (intact benchmark models: 0.0x; rank cut to 50%: 0.5)",
            "min_rank_loss": "and at least this many values are zero (one is rounding, not collapse)",
            "max_dead_share": "or when more than this share of the outputs or inputs is dead (all-zero weights; intact "
            "benchmark models: up to 0.47 in an OCR recogniser; the collapsed sample: 0.57)",
        },
    ),
    Rule(
        "WW004",
        "Correlation traps",
        "info",
        "layer",
        "Eigenvalues of the element-shuffled weights beyond the Marchenko-Pastur bulk in every shuffled copy show "
        "large, localised weights that randomisation does not remove. Martin & Mahoney link them to too large a "
        "learning rate; intact production models have them in many layers, so they are information.",
        "Look at the largest weights of this layer; compare checkpoints.",
        per_layer(_traps),
        {"max_traps": 0},
        {"max_traps": "fires when num_traps > max_traps"},
    ),
    Rule(
        "WW005",
        "Power-law fit failed or poor",
        "info",
        "layer",
        "When the ESD tail does not follow a power law (fit failed, or KS distance D large), alpha and the "
        "rules built on it say little about this layer.",
        "Read this layer's ESD plot; compare the distribution fits (truncated power law, log-normal) in the report.",
        per_layer(_poor_fit),
        {"max_D": POOR_FIT_D},
        {"max_D": "fires when the fit's KS distance D > max_D"},
    ),
    Rule(
        "WW006",
        "NaN or Inf weights",
        "error",
        "layer",
        "Weights with NaN or Inf make every output of the model undefined.",
        "Re-export the model from a checkpoint taken before the divergence; check the exporter's dtype casts.",
        per_layer(_nan_inf),
    ),
    Rule(
        "WW007",
        "Dead layer (all-zero or constant weights)",
        "error",
        "layer",
        "A weight matrix that is all zero passes no signal; a constant (rank-one) one passes a single direction: "
        "the layer is dead or was never trained.",
        "Check the export (weights not copied, initialiser left in place) and the training (collapsed layer).",
        per_layer(_dead),
    ),
    Rule(
        "WW008",
        "Scale outlier among sibling layers",
        "warning",
        "layer",
        "A layer whose gain (squared weight norm per output unit) is far from its siblings' multiplies or starves "
        "the signal path: a layer rescaled by an export or merge bug, or a folded normalisation gone wrong.",
        "Compare this layer's weights with the same layer in the original checkpoint; check folded BatchNorm scales.",
        relative.scale_outliers,
        {"max_robust_z": 3.5, "min_decades_above": 1.5, "min_decades_below": 3.0, "min_siblings": 4, "mad_floor": 0.1},
        {
            "max_robust_z": "fires when |0.6745·(gain − median)/MAD| over the siblings exceeds this (Iglewicz-Hoaglin)",
            "min_decades_above": "... and the gain is at least this many decades above the siblings' median (x30 weights: "
            "+2.95; x3: +0.95; intact benchmark models, input layer aside: at most +1.8)",
            "min_decades_below": "... or at least this many below (intact benchmark models: down to -2.8, decayed layers)",
            "min_siblings": "needs at least this many siblings (same kind and shape, else same kind)",
            "mad_floor": "the MAD is taken as at least this many decades",
        },
    ),
    Rule(
        "WW009",
        "Model alpha-hat out of a fixed range",
        "info",
        "model",
        "alpha-hat tracks quality within one architecture family only (GPT-2 has 9.8, good DenseNets below 0), so "
        "a fixed range says nothing about one model. Off by default; kept for policies that relied on it.",
        "Compare alpha-hat with other checkpoints of the same architecture (`wwaudit compare`).",
        _alpha_hat,
        {"alpha_hat_min": 0.0, "alpha_hat_max": 8.0},
        {"alpha_hat_min": "fires when alpha-hat < alpha_hat_min", "alpha_hat_max": "fires when alpha-hat > alpha_hat_max"},
        enabled=False,
    ),
    Rule(
        "WW010",
        "Weight not audited (unreadable or analysis failed)",
        "error",
        "layer",
        "A weight whose data cannot be read (external data missing or inconsistent, raw data of the wrong "
        "size) or whose spectrum cannot be computed was not audited: signing the model off would sign off "
        "weights nobody looked at, and a model whose data is broken does not run as stored.",
        "Fix the export or the external data files (sizes, offsets) and audit again; the layer's reason names the problem.",
        per_layer(_unanalysable),
    ),
    Rule(
        "WW011",
        "Layer indistinguishable from random initialisation",
        "warning",
        "layer",
        "The layer's spectrum does not stand above that of an element-shuffled copy of itself (a random matrix "
        "with the same weights), and it is the only one of its siblings that does not: the signature of weights "
        "that were never trained or failed to load. A warning, not an error: intact models of the benchmark have "
        "such layers too (two 96x48 convs of an OCR detector whose 33 other convs are structured).",
        "Check that the checkpoint's weights for this layer were loaded (names, shapes) before export.",
        relative.random_layers,
        {**_RANDOM_PARAMS, "min_siblings": 2, "min_structured_share": 0.9, "max_random_siblings": 0},
        {
            **_RANDOM_HELP,
            "min_siblings": "needs at least this many structured siblings (min_m eigenvalues per slice)",
            "min_structured_share": "... making at least this share of the siblings that are clearly random or structured",
            "max_random_siblings": "... and at most this many other random-looking siblings (intact models of the "
            "benchmark have up to 5 of them; among those one more is no evidence)",
        },
    ),
    Rule(
        "WW012",
        "Model indistinguishable from random initialisation",
        "error",
        "model",
        "Most layers' spectra do not stand above their element-shuffled copies: the model looks untrained, "
        "or its weights were never loaded into the exported graph.",
        "Check that the exported model holds the trained weights (export after loading the checkpoint).",
        relative.random_model,
        {**_RANDOM_PARAMS, "min_random_share": 0.75, "min_layers": 2},
        {
            **_RANDOM_HELP,
            "min_random_share": "fires when at least this share of the judged layers is random-like",
            "min_layers": "... and at least this many layers are",
        },
    ),
    Rule(
        "WW013",
        "Duplicated rows or columns",
        "warning",
        "layer",
        "Whole output rows or input columns that exactly repeat another one do not occur in trained float weights "
        "(none in the benchmark's intact models); they come from copy bugs, or from an exporter that expanded "
        "shared weights (grouped-query attention heads).",
        "Check how the weights were merged or exported; waive the layer in the policy if the copies are by design.",
        per_layer(_duplicates),
        {"min_duplicates": 2, "min_share": 0.01, "min_levels": 16},
        {
            "min_duplicates": "fires when at least this many rows + columns repeat another",
            "min_share": "... and they are at least this share of the rows",
            "min_levels": "only float-stored layers whose units take at least this many distinct values (coarse codes "
            "repeat rows by chance: 12 copies in an intact int8 LSTM of the benchmark)",
        },
    ),
    Rule(
        "WW014",
        "Model very heavy-tailed throughout (over-trained)",
        "warning",
        "model",
        "When most layers of a model have alpha below 2 with confidence, the model is in what the articles call the "
        "over-trained regime; a network trained to memorise random labels looks like this, intact production "
        "models of the benchmark do not (at most 10% of their layers).",
        "Check for over-training: training length, learning rate, regularisation; compare with earlier checkpoints.",
        relative.heavy_tailed_model,
        {"alpha_min": ALPHA_LOW, "max_D": POOR_FIT_D, "min_share": 0.5, "min_layers": 2},
        {
            "alpha_min": "a layer counts when its whole 95% alpha interval is below this",
            "max_D": "only fits with KS distance D <= max_D count (embeddings never)",
            "min_share": "fires when at least this share of the counted fits is heavy-tailed",
            "min_layers": "... and at least this many layers are",
        },
    ),
    Rule(
        "WW015",
        "Weights on very few levels",
        "warning",
        "layer",
        "Float weights whose output units each take 16 or fewer distinct values were rounded to 4 bits or "
        "fewer: round-to-nearest without calibration damaged 9 of 19 models at 4 bits and 17 of 19 at 2 bits "
        "beyond top-1 agreement 90% or output cosine 0.95 (benchmarks/judgement.py), and a float file that carries such weights "
        "hides the quantization from every tool that reads its dtype.",
        "Check how the weights were quantized and measure the accuracy; quantize with calibration, or keep the float original.",
        per_layer(_few_levels),
        {"max_levels": 16, "max_level_share": 0.75, "min_width": 16},
        {
            "max_levels": "fires when the median distinct values per output unit is at most this (4 bits: 16; "
            "intact float layers of the judgement benchmark: as many as the unit's weights, 16 or more)",
            "max_level_share": "... and at most this share of a unit's nonzero weights are distinct (float "
            "training: 1.0; 4-bit rounding of a 16-weight unit: about 0.7)",
            "min_width": "only layers with at least this many eigenvalues (a 9-weight kernel has 9 values at most)",
        },
    ),
    Rule(
        "WW016",
        "Layer still at its random initialisation",
        "error",
        "layer",
        "The layer's spectrum does not stand above its element-shuffled copy's, and its scale (gain) is exactly "
        "that of a standard initialiser (torch's default, LeCun or He, within 0.03 decades), while its siblings "
        "are trained; or its values fill exactly the bounded support of a uniform distribution, which a uniform "
        "initialiser gives and training does not: the weights were never loaded and kept the exporter's "
        "initialisation.",
        "Load the trained weights for this layer before export (check names and shapes in the checkpoint).",
        relative.initialised_layers,
        {
            **_RANDOM_PARAMS,
            "min_siblings": 2,
            "min_structured_share": 0.5,
            "max_random_siblings": 1000,
            "max_support_excess": 4.0,
            "min_support_weights": 256,
            "min_support_levels": 16,
        },
        {
            **_RANDOM_HELP,
            "min_siblings": "needs at least this many structured siblings (min_m eigenvalues per slice)",
            "min_structured_share": "... making at least this share of the siblings that are clearly random or structured",
            "max_random_siblings": "... and at most this many other random-looking siblings",
            "max_support_excess": "also fires, whatever the siblings, when support_ratio (max|w| / (sqrt(3) x RMS)) is "
            "within this many standard errors sqrt(0.2/n) of 1, a uniform distribution's bounded support (the 56 "
            "layers of the benchmark reset to torch's uniform default: 0.985-1.048; every intact layer of at least "
            "256 weights: 1.33 or more; benchmarks/JUDGEMENT.md, fourth round)",
            "min_support_weights": "... for layers of at least this many weights (n)",
            "min_support_levels": "... whose units take at least this many distinct values (or all of their weights "
            "do): rounded, ternary or clipped weights can be bounded without being an initialisation",
        },
    ),
    Rule(
        "WW017",
        "Rows copied from another layer",
        "warning",
        "layer",
        "Whole output rows that exactly repeat rows of another layer do not occur in trained float weights (none "
        "in the benchmark's intact models); they come from merges or model surgery that pasted weights across.",
        "Compare the layers named with the original checkpoint; waive them in the policy if the sharing is by design.",
        relative.copied_between_layers,
        {"min_rows": 2, "min_share": 0.01},
        {
            "min_rows": "fires when at least this many of the layer's rows repeat rows of other layers",
            "min_share": "... and they are at least this share of its rows",
        },
    ),
)

# the one registry: policy, `wwaudit rules`, SARIF (audit rules, integrity rules, comparison rules)
RULES: tuple[Rule, ...] = AUDIT_RULES + integrity_rules(Rule) + COMPARE_RULES
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
