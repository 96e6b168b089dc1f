"""The per-layer metrics: one typed list, from which every column list of every output derives.

Why one list: the JSON column order, the CSV header, the report's layer table and detail section,
the terminal summary, the MP keys the analysis nulls when the bulk fit fails, the deltas a
comparison reports and the model-level means must name the same metrics. Seven lists agreed by
hand before; a metric added here reaches every output, and the test suite checks that the
analysis produces exactly these names with values of the declared kind.

`Metric.description` may contain ``{band}``: the report replaces it with the policy's alpha band
(rules.findings.alpha_band), so a policy that moves the band moves the text with it.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a metric's value is: "count" an int, "real" a float, "text" a string, "list" a list of
# numbers (None when missing).
KINDS = ("count", "real", "text", "list")


@dataclass(frozen=True)
class Metric:
    """One per-layer metric and where it shows."""

    name: str  # the key in LayerResult.metrics, the JSON and the CSV
    label: str  # short column label (report tables, terminal summary)
    description: str  # one line: tooltip in the report, README reference
    kind: str = "real"  # one of KINDS
    group: str = ""  # the analysis step that sets it: spectrum, power_law, norms, rank, mp, traps, distributions, phase
    table: bool = False  # a column of the report's layer table
    detail: int = 0  # position in the report's per-layer section (0: not shown there)
    detail_label: str = ""  # its label there, when the short column label would be too terse
    terminal: bool = False  # a column of the terminal summary table
    delta: bool = False  # compared between two models (wwaudit compare, --reference)
    mean_over: str = ""  # "fitted" or "analysed": the summary has <name>_mean over those layers
    model_label: str = ""  # label of <name>_mean among the models' averages that `compare` sets side by side
    option: str = ""  # the AuditOptions field that turns it on; "" for the default metric set


def _opt(name: str, label: str, description: str, kind: str, option: str, detail: int = 0) -> Metric:
    """An opt-in metric: computed, and written to every output, only when its option is on."""
    return Metric(name, label, description, kind, option, detail=detail, option=option)


# The opt-in metrics (README, "Optional metrics"), in their output order. An audit without their
# options writes none of these keys, so its outputs keep their bytes.
_VEC = ("vec_entropy", "loc_ratio", "part_ratio")
_VEC_LABEL = {"vec_entropy": "vector entropy", "loc_ratio": "localisation ratio", "part_ratio": "participation ratio"}
OPTIONAL_METRICS: tuple[Metric, ...] = (
    _opt("num_fingers", "fingers", "top eigenvalues clip_xmax removed from the tail fit", "count", "fix_fingers", 20),
    _opt("raw_alpha", "raw α", "α of the tail fit before finger fixing", "real", "fix_fingers", 21),
    _opt("alpha_hill", "α (Hill)", "Hill estimator of α with xmin at the median eigenvalue (xmin_mid)", "real", "hill", 22),
    _opt("detX_num", "detX tail", "eigenvalues in the tail where the product of the rescaled ESD crosses 1", "count", "detx", 23),
    _opt("detX_val", "detX λ", "eigenvalue at which that tail starts", "real", "detx", 24),
    _opt("num_ERG_spikes", "ERG spikes", "eigenvalues in the detX tail (SETOL's ERG condition)", "count", "detx"),
    _opt("ERG_gap", "ERG gap", "detX tail size minus power-law tail size", "count", "detx", 25),
    _opt("sv_min", "σmin", "smallest singular value of W", "real", "ww_extras", 26),
    _opt("max_rand_eval", "max shuffled λ", "largest eigenvalue over the element-shuffled copies", "real", "ww_extras"),
    _opt("ww_softrank", "shuffled / λmax", "largest eigenvalue of one shuffled copy over λmax", "real", "ww_extras", 27),
    _opt("ww_maxdist", "λmax − shuffled", "λmax minus the largest eigenvalue of one shuffled copy", "real", "ww_extras"),
    *(
        _opt(
            f"{part}_{stat}_{vec}",
            f"{part} {stat} {vec}",
            f"{stat} {_VEC_LABEL[vec]} of the {part} eigenvectors",
            "real",
            "vectors",
        )
        for vec in _VEC
        for part in ("bulk", "tail")
        for stat in ("mean", "var")
    ),
    _opt(
        "trap_summary", "trap directions", "each trap: shuffled λ, σs beyond the edge, unit it sits on", "text", "trap_detail", 28
    ),
    _opt("trap_lambdas", "trap λ", "each trap's eigenvalue in the shuffled copies (median)", "list", "trap_detail"),
    _opt(
        "trap_sigmas",
        "trap σs",
        "how far each trap lies beyond the shuffled bulk edge, in spreads over shuffles",
        "list",
        "trap_detail",
    ),
    _opt("trap_rows", "trap row", "output unit the layer's matching singular vector peaks on", "list", "trap_detail"),
    _opt("trap_cols", "trap column", "input unit the layer's matching singular vector peaks on", "list", "trap_detail"),
    _opt("trap_slices", "trap slice", "slice (kernel position) of the matching direction", "list", "trap_detail"),
    _opt(
        "trap_localization",
        "trap PR",
        "participation ratio of the matching singular vectors (1/n: one entry)",
        "list",
        "trap_detail",
    ),
)

METRICS: tuple[Metric, ...] = (
    Metric("num_evals", "evals", "eigenvalues in the ESD (all slices pooled)", "count", "spectrum"),
    Metric("lambda_max", "λmax", "largest eigenvalue of WᵀW", "real", "spectrum", detail=8),
    Metric("sv_max", "σmax", "largest singular value of W", "real", "spectrum"),
    Metric(
        "alpha",
        "α",
        "power-law exponent of the ESD tail; {band} is typical of well-trained layers",
        "real",
        "power_law",
        table=True,
        detail=1,
        terminal=True,
        delta=True,
        mean_over="fitted",
        model_label="mean alpha",
    ),
    Metric("alpha_ci_low", "α CI low", "lower end of α's confidence interval", "real", "power_law", detail=2),
    Metric("alpha_ci_high", "α CI high", "upper end of α's confidence interval", "real", "power_law", detail=3),
    Metric(
        "alpha_weighted",
        "α̂",
        "α · log10 λmax",
        "real",
        "norms",
        table=True,
        terminal=True,
        delta=True,
        mean_over="fitted",
        model_label="alpha-hat (mean α·log10 λmax)",
    ),
    Metric(
        "D",
        "D",
        "Kolmogorov-Smirnov distance of the power-law fit (lower fits better)",
        "real",
        "power_law",
        table=True,
        detail=4,
        detail_label="KS distance D",
    ),
    Metric("xmin", "xmin", "smallest eigenvalue of the fitted tail", "real", "power_law", detail=5),
    Metric("xmax", "xmax", "largest eigenvalue of the fitted tail", "real", "power_law"),
    Metric("sigma", "σ(α)", "standard error of the fitted α", "real", "power_law"),
    Metric("num_pl_spikes", "eigenvalues in the tail", "eigenvalues at or above xmin", "count", "power_law", detail=6),
    Metric(
        "log_norm",
        "log‖W‖²",
        "log10 of the squared Frobenius norm",
        "real",
        "norms",
        table=True,
        terminal=True,
        delta=True,
        mean_over="analysed",
        model_label="mean log-norm",
    ),
    Metric(
        "log_spectral_norm",
        "log λmax",
        "log10 of the largest eigenvalue of WᵀW",
        "real",
        "norms",
        table=True,
        terminal=True,
        delta=True,
        mean_over="analysed",
    ),
    Metric("log_alpha_norm", "log α-norm", "log10 Σ λ^α", "real", "norms"),
    Metric("stable_rank", "stable rank", "Σλ / λmax", "real", "rank", table=True, detail=9, mean_over="analysed"),
    Metric(
        "log_gain",
        "gain",
        "log10 of the squared weight norm per output unit (the variance an output receives from "
        "unit-variance inputs; compares layers of different shapes)",
        "real",
        "structure",
        detail=17,
    ),
    Metric(
        "levels_per_row",
        "levels",
        "median number of distinct weight values per output unit (k-bit rounding leaves at most 2^k)",
        "count",
        "structure",
    ),
    Metric(
        "level_share",
        "level share",
        "median share of distinct values among an output unit's nonzero weights (1 after float training, "
        "at most 2^k / n for n weights rounded to k bits)",
        "real",
        "structure",
    ),
    Metric(
        "unit_norm_z",
        "unit spread z",
        "spread of the units' squared norms (rows or columns) against what iid random elements give, in standard "
        "errors: about 0 for a random matrix, far from 0 for most trained layers",
        "real",
        "structure",
    ),
    Metric(
        "support_ratio",
        "support ratio",
        "largest |weight| over √3 × the weights' RMS: about 1 for a uniform initialiser (bounded support), "
        "2 or more for a Gaussian one and for trained layers",
        "real",
        "structure",
    ),
    Metric("matrix_rank", "rank", "singular values above the numerical threshold σmax·N·eps", "count", "rank"),
    Metric(
        "rank_loss",
        "rank loss",
        "singular values that are numerically zero",
        "count",
        "rank",
        table=True,
        detail=10,
        terminal=True,
    ),
    Metric("weak_rank_loss", "weak rank loss", "eigenvalues below a small absolute tolerance", "count", "rank"),
    Metric("entropy", "entropy", "matrix entropy of the ESD (1: spread like a random matrix, 0: one direction)", "real", "rank"),
    Metric("num_spikes", "spikes", "eigenvalues above the Marchenko-Pastur bulk", "count", "mp", table=True, detail=13),
    Metric("sigma_mp", "σ (MP)", "scale σ of the Marchenko-Pastur fit to the bulk", "real", "mp", detail=11),
    Metric("mp_softrank", "MP soft rank", "MP bulk edge / λmax", "real", "mp", delta=True),
    Metric("bulk_min", "MP bulk start", "lower edge of the Marchenko-Pastur bulk", "real", "mp"),
    Metric("bulk_max", "MP bulk edge", "upper edge of the Marchenko-Pastur bulk", "real", "mp", detail=12),
    Metric(
        "num_traps",
        "traps",
        "correlation traps: spikes the element-shuffled copy also shows",
        "count",
        "traps",
        table=True,
        detail=14,
    ),
    Metric(
        "rand_distance",
        "distance to shuffled",
        "Jensen-Shannon distance between the ESD and that of an element-shuffled copy",
        "real",
        "traps",
        detail=15,
    ),
    Metric("rand_bulk_max", "shuffled bulk edge", "MP bulk edge of the element-shuffled copy", "real", "traps"),
    Metric(
        "rand_lambda_max",
        "shuffled λmax",
        "largest eigenvalue of the element-shuffled copy (median over copies)",
        "real",
        "traps",
    ),
    Metric(
        "num_rand_spikes",
        "above shuffled",
        "eigenvalues above the shuffled copy's top (its λmax or trap edge)",
        "count",
        "traps",
        detail=18,
    ),
    Metric(
        "rand_lambda_ratio",
        "λmax / shuffled",
        "λmax over the shuffled copy's top: about 1 for a random matrix, well above 1 for a trained layer",
        "real",
        "traps",
        detail=19,
    ),
    Metric("dup_rows", "copied rows", "non-zero output rows that exactly repeat another", "count", "structure"),
    Metric("dup_cols", "copied columns", "non-zero input columns that exactly repeat another", "count", "structure"),
    Metric("dead_rows", "dead outputs", "output units with all-zero weights", "count", "structure"),
    Metric("dead_cols", "dead inputs", "inputs with all-zero weights", "count", "structure"),
    Metric("dead_share", "dead share", "larger of the dead shares of outputs and inputs", "real", "structure"),
    Metric("dead_rank_loss", "dead-unit rank loss", "singular values the dead units remove", "count", "structure"),
    Metric("best_fit", "best tail model", "tail model the likelihood-ratio tests prefer", "text", "distributions", detail=7),
    Metric("tpl_alpha", "TPL α", "exponent of the truncated power-law fit", "real", "distributions"),
    Metric("tpl_lambda", "TPL λ", "cut-off rate of the truncated power-law fit", "real", "distributions"),
    Metric(
        "R_tpl",
        "R (TPL)",
        "log-likelihood ratio power law vs truncated power law (> 0 favours the power law)",
        "real",
        "distributions",
    ),
    Metric("p_tpl", "p (TPL)", "p-value of R_tpl", "real", "distributions"),
    Metric("R_lognormal", "R (lognormal)", "log-likelihood ratio power law vs lognormal", "real", "distributions"),
    Metric("p_lognormal", "p (lognormal)", "p-value of R_lognormal", "real", "distributions"),
    Metric("R_exponential", "R (exponential)", "log-likelihood ratio power law vs exponential", "real", "distributions"),
    Metric("p_exponential", "p (exponential)", "p-value of R_exponential", "real", "distributions"),
    Metric("phase", "phase", "training phase read from the metrics (rules/phases.py)", "text", "phase", detail=16),
    *OPTIONAL_METRICS,
)

METRICS_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def names(**where: object) -> tuple[str, ...]:
    """Names of the metrics whose fields equal `where` (e.g. names(group="mp")), in the list's order."""
    return tuple(m.name for m in METRICS if all(getattr(m, k) == v for k, v in where.items()))


# The lists the outputs read, all derived from METRICS.
METRIC_COLUMNS: tuple[str, ...] = tuple(m.name for m in METRICS if not m.option)  # JSON and CSV column order
OPTIONAL_COLUMNS: tuple[str, ...] = tuple(m.name for m in METRICS if m.option)  # after them, when computed
TABLE_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.table)  # report layer table
DETAIL_METRICS: tuple[Metric, ...] = tuple(sorted((m for m in METRICS if m.detail), key=lambda m: m.detail))
TERMINAL_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.terminal)
MP_METRICS: tuple[str, ...] = names(group="mp")  # null together when the Marchenko-Pastur fit fails
DELTA_METRICS: tuple[str, ...] = names(delta=True)
MEAN_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.mean_over)  # the summary's <name>_mean
MODEL_METRICS: tuple[tuple[str, str], ...] = tuple((f"{m.name}_mean", m.model_label) for m in METRICS if m.model_label)
