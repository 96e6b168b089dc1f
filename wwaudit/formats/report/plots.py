"""Report plots drawn with matplotlib (Agg/SVG canvas, no pyplot, no display), as data: URIs.

Plots only draw numbers the audit already produced (eigenvalues, alpha, xmin, bulk edges); the
curves they overlay are the fitted models evaluated from those parameters, never a new fit.
matplotlib is imported inside the functions so `wwaudit --help` and JSON-only runs stay fast.

Output is deterministic (fixed SVG hash salt, no dates in the metadata) so the same audit gives
the same report bytes. Many layers are drawn in worker processes, because plots are the larger part
of the report's time on models with many flagged layers.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from wwaudit.rules.findings import ALPHA_BAND

# One palette for the plots and report.css, so a colour means the same thing everywhere.
STATUS_COLOURS = {
    "ok": "#2e7d32",
    "info": "#1565c0",
    "warning": "#c77800",
    "error": "#b71c1c",
    "fit_failed": "#6a1b9a",
    "skipped": "#9aa0aa",
}
ESD_COLOUR = "#4a6fa5"
SHUFFLED_COLOUR = "#8a8f99"
FIT_COLOUR = "#d1495b"
BAND_COLOUR = "#d8eed9"

PLOT_STYLE: dict[Any, Any] = {  # matplotlib types rc keys as Literals
    "svg.hashsalt": "wwaudit",  # stable element ids: same audit, same bytes
    # text as SVG text, drawn by the browser: 25% faster than glyphs as paths, half the bytes,
    # sharp at any zoom and searchable; matplotlib writes a fallback list ending in sans-serif for
    # a browser without DejaVu Sans, and anchors every label at its centre or end, so a fallback
    # face of another width stays in place
    "svg.fonttype": "none",
    # no hinting in the raster (PDF) plots: at 160 dpi it changes nothing visible and costs 10% of a plot
    "text.hinting": "no_hinting",
    "font.family": "DejaVu Sans",
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e7ed",
    "grid.linewidth": 0.5,
    "path.simplify": True,
}

PLOT_FORMATS = ("svg", "jpeg", "png")  # png: --plots-dir files only
RASTER_DPI = 160
JPEG_QUALITY = 92

# Each figure's size in inches: the plots are drawn at it, and the PDF lays its images out from it
# before they are drawn (PlotRenderer.pixel_size).
FIGURE_INCHES = {"alpha_depth": (7.0, 2.5), "alpha_hist": (3.4, 2.4), "spectral_norm": (3.4, 2.4), "layer": (7.0, 2.4)}

# A light box keeps legend text readable where it overlaps the histogram.
_LEGEND = {"frameon": True, "framealpha": 0.85, "edgecolor": "none", "facecolor": "white", "borderpad": 0.3}

# Below this many plots, starting worker processes costs more than it saves.
_PARALLEL_MIN = 8


@dataclass
class DepthPoint:
    """One analysed layer as the model-level plots see it."""

    position: int
    label: str
    status: str  # a STATUS_COLOURS key
    alpha: float | None = None
    alpha_ci: tuple[float, float] | None = None
    log_spectral_norm: float | None = None


@dataclass
class LayerPlotJob:
    """Everything one layer's ESD/MP figure needs (picklable, for worker processes)."""

    key: str
    evals: np.ndarray
    random_evals: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    fmt: str = "svg"
    legend: bool = True  # False: the report prints the key as text beside the figure (document.plot_key)


# The layer metrics a layer plot draws (the fit, the bulk edges, the spike count).
PLOT_METRICS = ("alpha", "xmin", "D", "sigma_mp", "bulk_min", "bulk_max", "num_spikes")


def figure_uri(fig: Any, fmt: str) -> str:
    """The figure as a data: URI: SVG for the HTML report; JPEG at print resolution for the PDF.

    Why JPEG there: WeasyPrint spends far longer drawing an SVG plot (each label is laid out as
    text) than placing an image, and it decodes every PNG and re-encodes it (alpha split off
    into a second image) for the PDF, 20 ms a plot; a JPEG goes into the PDF as it is
    (DCTDecode). At quality 92 without chroma subsampling the plots are indistinguishable from
    the PNG at 2x zoom (compared by eye on rendered pages).
    """
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"plot format {fmt!r} is not one of {PLOT_FORMATS}")
    buf = io.BytesIO()
    if fmt == "jpeg":
        fig.savefig(buf, format="jpeg", dpi=RASTER_DPI, pil_kwargs={"quality": JPEG_QUALITY, "subsampling": 0})
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    if fmt == "png":
        fig.savefig(buf, format="png", dpi=RASTER_DPI, metadata={"Software": None})
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure(width: float, height: float, ncols: int = 1, bottom: float = 0.5) -> tuple[Any, list[Any]]:
    """A figure with fixed margins (in inches): no tight-layout pass, so each plot is drawn once."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasSVG(fig)
    fig.subplots_adjust(left=0.55 / width, right=1 - 0.1 / width, bottom=bottom / height, top=1 - 0.25 / height, wspace=0.28)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _pow10(value: float, _pos: Any = None) -> str:
    """Log-axis labels as 10 with a Unicode exponent: no mathtext parsing (the slow part of a plot)."""
    if value <= 0:
        return ""
    exponent = int(round(np.log10(value)))
    return "10" + str(exponent).translate(_SUPERSCRIPT)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _log_axes(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=6))
        axis.set_major_formatter(FuncFormatter(_pow10))
        axis.set_minor_locator(NullLocator())


def _log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Ticks of a log axis over [lo, hi]: powers of ten when it spans two decades or more; else
    four values between the limits as plain numbers, since a narrower range holds at most one
    power of ten and was left with one label or none."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator

    if hi / lo >= 100:
        axis.set_major_locator(LogLocator(base=10, numticks=6))
        axis.set_major_formatter(FuncFormatter(_pow10))
        return
    ticks = [float(f"{v:.2g}") for v in np.geomspace(lo, hi, 6)[1:-1]]
    axis.set_major_locator(FixedLocator(sorted(set(ticks))))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.2g}"))


# Eigenvalues below this fraction of λmax are rounding noise of zero singular values (1e-30 next to
# 1e2): on log axes they would stretch the range by decades and squash the tail into a sliver.
LOG_FLOOR = 1e-12


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, (str, bool)):
        return None
    value = float(value)
    return value if np.isfinite(value) else None


# The model plots' x axis: analysed layers side by side in depth order, named by their '#' id.
DEPTH_AXIS_LABEL = "layer # (analysed layers, in depth order)"


def _depth_ticks(ax: Any, points: Sequence[DepthPoint], most: int = 25) -> None:
    """Label at most `most` layers along depth so labels never overlap, whatever the depth."""
    step = max(1, int(np.ceil(len(points) / most)))
    shown = points[::step]
    ax.set_xticks([p.position for p in shown])
    ax.set_xticklabels([p.label for p in shown], rotation=90 if len(shown) > 12 else 0)
    ax.set_xlim(-0.8, max(p.position for p in points) + 0.8)


def alpha_depth_plot(points: Sequence[DepthPoint], fmt: str = "svg", band: tuple[float, float] = ALPHA_BAND) -> str | None:
    """Alpha per layer along depth, with the policy's alpha band; None when no layer has an alpha."""
    import matplotlib

    fitted = [p for p in points if _finite(p.alpha) is not None]
    if not fitted:
        return None
    with matplotlib.rc_context(PLOT_STYLE):
        fig, (ax,) = figure(*FIGURE_INCHES["alpha_depth"], bottom=0.62)
        alphas = np.array([p.alpha for p in fitted], dtype=float)
        top = float(min(max(8.0, alphas.max() * 1.1), 20.0))
        ax.axhspan(*band, color=BAND_COLOUR, zorder=0)  # explained in the caption: no legend over the points
        pos = np.array([p.position for p in fitted], dtype=float)
        ax.plot(pos, np.minimum(alphas, top), color="#c9ced8", lw=0.8, zorder=1)
        ci = [(p.position, p.alpha_ci) for p in fitted if p.alpha_ci is not None]
        if ci:
            ax.vlines(
                [x for x, _ in ci],
                [min(lo, top) for _, (lo, _hi) in ci],
                [min(hi, top) for _, (_lo, hi) in ci],
                color="#5a6272",
                lw=0.8,
                zorder=2,
            )
        colours = np.array([STATUS_COLOURS[p.status] for p in fitted])
        for clipped, marker in ((False, "o"), (True, "^")):
            sel = (alphas > top) == clipped
            if sel.any():
                ax.scatter(pos[sel], np.minimum(alphas[sel], top), s=14, marker=marker, c=colours[sel], zorder=3, linewidths=0)
        ax.set_ylim(0, top)
        ax.set_ylabel("alpha")
        ax.set_xlabel(DEPTH_AXIS_LABEL)
        _depth_ticks(ax, points)
        return figure_uri(fig, fmt)


def alpha_histogram_plot(points: Sequence[DepthPoint], fmt: str = "svg", band: tuple[float, float] = ALPHA_BAND) -> str | None:
    """Distribution of alpha over layers, with the policy's alpha band; None when no layer has an alpha."""
    import matplotlib

    alphas = np.array([p.alpha for p in points if _finite(p.alpha) is not None], dtype=float)
    if alphas.size == 0:
        return None
    with matplotlib.rc_context(PLOT_STYLE):
        fig, (ax,) = figure(*FIGURE_INCHES["alpha_hist"], bottom=0.45)
        top = float(min(max(8.0, alphas.max() * 1.05), 20.0))
        ax.axvspan(*band, color=BAND_COLOUR, zorder=0)
        counts, _, _ = ax.hist(np.minimum(alphas, top), bins=np.linspace(0, top, 33), color=ESD_COLOUR, zorder=2)
        ax.set_xlim(0, top)
        ax.set_ylim(0, max(1.0, float(np.max(counts))) * 1.12)  # headroom: the tallest bar is not cut by the frame
        ax.set_xlabel("alpha" + (" (clipped at %g)" % top if alphas.max() > top else ""))
        ax.set_ylabel("layers")
        ax.yaxis.get_major_locator().set_params(integer=True)
        return figure_uri(fig, fmt)


def spectral_norm_plot(points: Sequence[DepthPoint], fmt: str = "svg", band: tuple[float, float] = ALPHA_BAND) -> str | None:
    """log10 of the largest eigenvalue per layer along depth; None when no layer has one (`band`
    unused: every model plot takes the same arguments)."""
    import matplotlib

    shown = [p for p in points if _finite(p.log_spectral_norm) is not None]
    if not shown:
        return None
    with matplotlib.rc_context(PLOT_STYLE):
        fig, (ax,) = figure(*FIGURE_INCHES["spectral_norm"], bottom=0.62)
        # one line collection, not one rectangle per layer: a 1,000-layer model stays quick to draw
        ax.vlines(
            [p.position for p in shown],
            0,
            [p.log_spectral_norm for p in shown],
            colors=[STATUS_COLOURS[p.status] for p in shown],
            lw=float(np.clip(160 / len(points), 0.6, 9)),
        )
        ax.axhline(0, color="#5a6272", lw=0.6)
        ax.set_ylabel("log10 λmax")
        ax.set_xlabel(DEPTH_AXIS_LABEL)
        _depth_ticks(ax, points, most=12)
        return figure_uri(fig, fmt)


def _positive(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr) & (arr > 0)]


def layer_plot(job: LayerPlotJob) -> str | None:
    """One layer's figure: ESD on log-log axes with the fitted power law and xmin (left), and the
    ESD on linear axes with the Marchenko-Pastur bulk (right); the shuffled copy's ESD overlaid.
    """
    import matplotlib

    evals = _positive(job.evals)
    if evals.size < 2:
        return None
    rand = _positive(job.random_evals) if job.random_evals is not None else np.empty(0)
    m = job.metrics
    floor = LOG_FLOOR * float(evals.max())
    # float64 weights near 1e145 give eigenvalues near 1e290: keep numpy's overflow warnings for
    # intermediate values off the user's terminal (the curves below are computed overflow-free)
    with _LAYER_LOCK, matplotlib.rc_context(PLOT_STYLE), np.errstate(all="ignore"):
        fig, ax_log, ax_lin = _layer_figure()
        _esd_loglog(ax_log, evals[evals > floor], rand[rand > floor], m, dropped=int(np.count_nonzero(evals <= floor)))
        _esd_mp(ax_lin, evals, rand, m)
        if job.legend:  # the artists' labels are plot_key's texts (tests/test_report_layout.py checks)
            ax_log.legend(loc="upper right", **_LEGEND)
            ax_lin.legend(loc="upper right", **_LEGEND)
        return figure_uri(fig, job.fmt)


def plot_key(m: dict[str, Any], shuffled: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The legend of each panel of a layer plot as (style, text): style is fill, outline, line or
    dashed. The report prints it as text under the figure, where it is as legible as the page and
    never covers the histogram (and the figure draws 20-30 ms faster); plot files draw it inside."""
    left: list[tuple[str, str]] = [("fill", "ESD")] + ([("outline", "shuffled")] if shuffled else [])
    right = list(left)
    alpha, xmin = _finite(m.get("alpha")), _finite(m.get("xmin"))
    if alpha is not None and xmin is not None and xmin > 0:
        left += [("line", f"power law α = {alpha:.2f}"), ("dashed", f"xmin = {xmin:.3g}")]
    edges = _mp_edges(m)
    if edges is not None:
        sigma = _finite(m.get("sigma_mp"))
        right += [
            ("line", "MP bulk" + (f", σ = {sigma:.3g}" if sigma is not None else "")),
            ("dashed", f"bulk edge {edges[1]:.3g}"),
        ]
    return left, right


def shared_key(shuffled: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """plot_key without a layer's numbers: the PDF prints it once above its layer plots, and each
    layer's line of metrics gives its α, xmin, σ (MP) and bulk edge (WeasyPrint spent ~15 ms laying
    out a key under every figure, a third of a plotted layer's share of the PDF)."""
    left: list[tuple[str, str]] = [("fill", "ESD")] + ([("outline", "shuffled")] if shuffled else [])
    right = list(left)
    left += [("line", "power law (α)"), ("dashed", "xmin")]
    right += [("line", "MP bulk (σ (MP))"), ("dashed", "MP bulk edge")]
    return left, right


# One reusable figure per process: axes, titles and tick objects are built once and only the data
# artists change, which saves about half of a plot's drawing time.
_LAYER_FIGURES: list[tuple[Any, Any, Any]] = []
_LAYER_LOCK = threading.Lock()


def _layer_figure() -> tuple[Any, Any, Any]:
    from matplotlib.ticker import MaxNLocator

    if _LAYER_FIGURES:
        cached = _LAYER_FIGURES[0]
        for ax in cached[1:]:
            for artist in [*ax.lines, *ax.patches, *ax.collections, *ax.texts]:
                artist.remove()
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        return cached
    fig, (ax_log, ax_lin) = figure(*FIGURE_INCHES["layer"], ncols=2, bottom=0.52)  # room for a second x-label line
    ax_log.set_xscale("log")
    ax_log.set_yscale("log")
    _log_axes(ax_log)
    ax_log.set_xlabel("eigenvalue λ of WᵀW (log)")
    ax_log.set_ylabel("density (log)")
    ax_lin.xaxis.set_major_locator(MaxNLocator(6))
    ax_lin.yaxis.set_major_locator(MaxNLocator(5))
    ax_lin.set_xlabel("eigenvalue λ of WᵀW")
    ax_lin.set_ylabel("density")
    for ax, title in ((ax_log, "ESD, log-log: power-law tail"), (ax_lin, "ESD, linear: Marchenko-Pastur bulk")):
        box = ax.get_position()
        # figure text, not ax.set_title: titles re-measure every tick label on each draw
        fig.text((box.x0 + box.x1) / 2, box.y1 + 0.03, title, ha="center", va="bottom", fontsize=8)
    _LAYER_FIGURES.append((fig, ax_log, ax_lin))
    return fig, ax_log, ax_lin


def _esd_loglog(ax: Any, evals: np.ndarray, rand: np.ndarray, m: dict[str, Any], dropped: int = 0) -> None:
    lo, hi = evals.min(), evals.max()
    if rand.size:
        lo, hi = min(lo, rand.min()), max(hi, rand.max())
    if hi <= lo:
        lo, hi = lo / 2, hi * 2
    bins = np.logspace(np.log10(lo), np.log10(hi) + 1e-9, 50)
    dens, _ = np.histogram(evals, bins=bins, density=True)
    _stairs(ax, dens, bins, fill=True, color=ESD_COLOUR, alpha=0.85, label="ESD")
    rdens = np.empty(0)
    if rand.size:
        rdens, _ = np.histogram(rand, bins=bins, density=True)
        _stairs(ax, rdens, bins, color=SHUFFLED_COLOUR, lw=0.9, label="shuffled")
    alpha, xmin = _finite(m.get("alpha")), _finite(m.get("xmin"))
    if alpha is not None and xmin is not None and xmin > 0:
        tail = float(np.mean(evals >= xmin))
        lam = np.logspace(np.log10(xmin), np.log10(evals.max()), 40)
        ax.plot(
            lam,
            tail * (alpha - 1) / xmin * (lam / xmin) ** (-alpha),
            color=FIT_COLOUR,
            lw=1.4,
            label=f"power law α = {alpha:.2f}",
        )
        ax.axvline(xmin, color=FIT_COLOUR, ls="--", lw=0.9, label=f"xmin = {xmin:.3g}")
    # the y range covers the shuffled copy too: its bars were clipped above the axes
    positive = np.concatenate([dens[dens > 0], rdens[rdens > 0]])
    if positive.size:
        ax.set_ylim(positive.min() / 3, positive.max() * 3)
        _log_ticks(ax.yaxis, positive.min() / 3, positive.max() * 3)
    ax.set_xlim(bins[0], bins[-1])
    _log_ticks(ax.xaxis, bins[0], bins[-1])
    ax.set_xlabel("eigenvalue λ of WᵀW (log)" + (f"\n{dropped} below {LOG_FLOOR:g}·λmax left out" if dropped else ""))


def _stairs(ax: Any, values: np.ndarray, edges: np.ndarray, **style: Any) -> None:
    """A histogram as one step patch, like ax.stairs but without updating the data limits: both
    panels set their limits themselves, and walking the step path's Bézier segments for limits
    that are then overridden was a fifth of a layer plot's time."""
    from matplotlib.patches import StepPatch

    colour = style.pop("color")
    style.setdefault("fill", False)
    if style["fill"]:  # the styling ax.stairs gives: a filled step has no outline
        style.setdefault("linewidth", 0)
        style["facecolor"] = colour
    else:
        style["edgecolor"] = colour
    ax.add_artist(StepPatch(values, edges, **style))


def _mp_edges(m: dict[str, Any]) -> tuple[float, float] | None:
    a, b = _finite(m.get("bulk_min")), _finite(m.get("bulk_max"))
    if a is None or b is None or b <= max(a, 0.0):
        return None
    return max(a, 0.0), b


def _esd_mp(ax: Any, evals: np.ndarray, rand: np.ndarray, m: dict[str, Any]) -> None:
    edges = _mp_edges(m)
    right = float(evals.max())
    if edges is not None:
        right = min(right, 2.0 * edges[1])  # keep the bulk readable when spikes lie far out
    if rand.size:
        right = max(right, float(rand.max()))
    right = right * 1.04 if right < 1e300 else right  # stays finite for eigenvalues up to float64's max
    bins = np.linspace(0.0, right, 60)
    dens, _ = np.histogram(evals, bins=bins, density=False)
    width = bins[1] - bins[0]
    dens = dens / (evals.size * width)
    _stairs(ax, dens, bins, fill=True, color=ESD_COLOUR, alpha=0.85, label="ESD")
    ymax = float(dens.max()) if dens.size else 1.0
    if rand.size:
        rdens, _ = np.histogram(rand, bins=bins)
        rdens = rdens / (rand.size * width)
        _stairs(ax, rdens, bins, color=SHUFFLED_COLOUR, lw=0.9, label="shuffled")
        ymax = max(ymax, float(rdens.max()))
    if edges is not None:
        a, b = edges
        # MP density with edges a = s(1-√c)², b = s(1+√c)² (the form of eigenvalues of WᵀW for any
        # normalisation), scaled to the share of eigenvalues inside the bulk.
        sqrt_s = (np.sqrt(a) + np.sqrt(b)) / 2
        sqrt_c = (np.sqrt(b) - np.sqrt(a)) / (np.sqrt(b) + np.sqrt(a))
        s, c = sqrt_s**2, sqrt_c**2
        lam = np.linspace(max(a, b * 1e-4), b, 200)
        # in units of b: (b − λ)(λ − a) would overflow for eigenvalues near 1e290
        u = lam / b
        rho = np.sqrt(np.clip((1.0 - u) * (u - a / b), 0, None)) / (2 * np.pi * c * (s / b) * lam)
        share = float(np.mean(evals <= b))
        label = "MP bulk" + (f", σ = {_finite(m.get('sigma_mp')):.3g}" if _finite(m.get("sigma_mp")) is not None else "")
        ax.plot(lam, share * rho, color=FIT_COLOUR, lw=1.4, label=label)
        ax.axvline(b, color=FIT_COLOUR, ls="--", lw=0.9, label=f"bulk edge {b:.3g}")
    ax.set_ylim(0, ymax * 1.15 if ymax > 0 else 1)
    ax.set_xlim(0, right)
    beyond = int(np.count_nonzero(evals > right))
    spikes = m.get("num_spikes")
    note = []
    if spikes is not None:
        note.append(f"{spikes} spike{'s' if spikes != 1 else ''}")
    if beyond:
        note.append(f"{beyond} beyond the axis (λmax {evals.max():.3g})")
    # in the axis label, not in or beside the legend: there it collided with the legend's entries
    ax.set_xlabel("eigenvalue λ of WᵀW" + (f"\n{', '.join(note)}" if note else ""))


def _model_task(name: str, points: Sequence[DepthPoint], fmt: str, band: tuple[float, float]) -> str | None:
    return _MODEL_PLOTS[name](points, fmt, band)


_MODEL_PLOTS = {
    "alpha_depth": alpha_depth_plot,
    "alpha_hist": alpha_histogram_plot,
    "spectral_norm": spectral_norm_plot,
}


MODEL_PLOT_NAMES = tuple(_MODEL_PLOTS)


def _has_model_plot(name: str, points: Sequence[DepthPoint]) -> bool:
    """Whether the model plot `name` draws something (the same tests the plot functions make)."""
    if name == "spectral_norm":
        return any(_finite(p.log_spectral_norm) is not None for p in points)
    return any(_finite(p.alpha) is not None for p in points)


def can_plot(job: LayerPlotJob) -> bool:
    """Whether layer_plot draws something for `job` (it needs two positive eigenvalues)."""
    return _positive(job.evals).size >= 2


PLOT_URL_SCHEME = "wwaudit-plot"


class PlotRenderer:
    """Draws a report's plots, in worker processes when there are enough of them.

    Plots are either waited for (`model_plots`, `uris`: the HTML report embeds them as data: URIs)
    or, with `deferred`, handed out at once as ``wwaudit-plot:`` URLs (`model_url`, `url`) whose JPEG
    bytes the PDF renderer fetches (`fetch`) when WeasyPrint reaches the image: WeasyPrint's import,
    parsing, styling and table layout then run on one core while the plots are drawn on the others
    (on the BERT-large benchmark WeasyPrint never waits for a plot). Results do not depend on the
    number of workers (a reused figure draws exactly as a fresh one). Use as a context manager:
    leaving it stops the workers.
    """

    def __init__(
        self,
        points: Sequence[DepthPoint],
        jobs: Sequence[LayerPlotJob],
        fmt: str = "svg",
        workers: int | None = None,
        deferred: bool = False,
        band: tuple[float, float] = ALPHA_BAND,
    ) -> None:
        if workers is None:
            workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
        models = [name for name in _MODEL_PLOTS if _has_model_plot(name, points)]
        layers = [job for job in jobs if can_plot(job)]
        self._pool: ProcessPoolExecutor | None = None
        self._plots: dict[str, Any] = {}
        if workers > 1 and len(models) + len(layers) >= _PARALLEL_MIN and _fork_available():
            import multiprocessing

            if not deferred:
                _preload()  # children inherit the modules; deferred, they import them while this process goes on
            from wwaudit.formats.render_process import die_with_parent

            self._pool = ProcessPoolExecutor(
                max_workers=min(workers, len(models) + len(layers)),
                mp_context=multiprocessing.get_context("fork"),
                initializer=_background_worker if deferred else die_with_parent,
            )
            for name in models:
                self._plots[f"model-{name}"] = self._pool.submit(_model_task, name, points, fmt, band)
            for job in layers:
                self._plots[f"layer-{job.key}"] = self._pool.submit(layer_plot, job)
        else:
            for name in models:
                self._plots[f"model-{name}"] = _model_task(name, points, fmt, band)
            for job in layers:
                self._plots[f"layer-{job.key}"] = layer_plot(job)

    def __enter__(self) -> "PlotRenderer":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _uri(self, key: str) -> str | None:
        value: Any = self._plots.get(key)
        return value.result() if hasattr(value, "result") else value

    def model_plots(self) -> dict[str, str | None]:
        """The model-level plots as data: URIs by name (waits for them)."""
        return {name: self._uri(f"model-{name}") for name in _MODEL_PLOTS}

    def uris(self) -> dict[str, str | None]:
        """Every layer plot as a data: URI by job key (waits for all of them)."""
        return {key.removeprefix("layer-"): self._uri(key) for key in self._plots if key.startswith("layer-")}

    def _url(self, key: str) -> str | None:
        return f"{PLOT_URL_SCHEME}:{key}" if key in self._plots else None

    def model_url(self, name: str) -> str | None:
        """A URL for a model plot that `fetch` resolves later; None when the plot would be empty."""
        return self._url(f"model-{name}")

    def url(self, key: str) -> str | None:
        """A URL for one layer's plot that `fetch` resolves later; None when it has no plot."""
        return self._url(f"layer-{key}")

    def urls(self) -> list[str]:
        """Every URL that `url`/`model_url` hand out (the plots that draw something)."""
        return [f"{PLOT_URL_SCHEME}:{key}" for key in self._plots]

    def _key(self, url: str) -> str:
        """The plot behind a URL from `url`/`model_url`; KeyError for any other URL."""
        key = url.removeprefix(f"{PLOT_URL_SCHEME}:")
        if key not in self._plots:
            raise KeyError(url)
        return key

    def pixel_size(self, url: str) -> tuple[int, int]:
        """The size in pixels of the raster image behind a URL from `url`/`model_url`, known before
        it is drawn: the PDF lays the pages out while the plots are still being drawn."""
        key = self._key(url)
        width, height = FIGURE_INCHES["layer" if key.startswith("layer-") else key.removeprefix("model-")]
        return int(width * RASTER_DPI), int(height * RASTER_DPI)

    def fetch(self, url: str) -> bytes:
        """The image bytes behind a URL from `url`/`model_url` (waits for that plot); KeyError
        for any other URL."""
        if (uri := self._uri(self._key(url))) is None:
            raise KeyError(url)
        return base64.b64decode(uri.split(",", 1)[1])


def render_all(
    points: Sequence[DepthPoint], jobs: Sequence[LayerPlotJob], fmt: str = "svg", workers: int | None = None
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Model-level plots by name and layer plots by job key (None where a layer has no plot),
    drawn in parallel when worth it; `workers` is the audit's --workers when given, else the CPUs
    available (at most 8)."""
    with PlotRenderer(points, jobs, fmt, workers) as renderer:
        layers = renderer.uris()
        return renderer.model_plots(), {job.key: layers.get(job.key) for job in jobs}


def _background_worker() -> None:
    """A plot worker of a deferred renderer: it dies with its parent and yields the CPU to it
    (nice 10). The PDF renderer needs the plots only when it draws the pages, after laying them
    all out, so its layout is the longer path."""
    from wwaudit.formats.render_process import die_with_parent

    die_with_parent()
    try:
        os.nice(10)
    except OSError:
        pass


def _preload() -> None:
    import matplotlib.backends.backend_svg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def _fork_available() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()
