"""Per-trap detail (--trap-detail): which directions are correlation traps, how far beyond the
shuffled bulk each lies, and how localised each is.

A correlation trap is an eigenvalue of the element-shuffled copy above its MP bulk edge
(traps.py). Shuffling keeps the elements: a trap comes from a few unusually large elements, and
those elements make a direction of the layer itself too, a singular pair (u, v) concentrated on
the rows and columns that hold them. So the k-th trap is matched with the layer's k-th largest
singular direction, and we report:

* ``trap_lambdas``: the k-th largest shuffled eigenvalue (median over TRAP_REPLICAS copies);
* ``trap_sigmas``: (that median − the trap edge) / its standard deviation over the copies: how
  many spreads over shuffles the trap stands beyond the bulk (None where the copies agree exactly);
* ``trap_rows`` / ``trap_cols`` / ``trap_slices``: the output unit where |u| peaks, the input
  unit where |v| peaks, and the slice (conv kernel position) of that direction;
* ``trap_localization``: the participation ratio (Σx²)²/(n·Σx⁴) of the more localised of u and
  v: 1/n for a vector on one entry, 1 for a flat one.

The reference's development branch sketches a "trap analysis" (unreleased, untested); 0.7.7 has
none, so there is no parity test: tests/test_extra_metrics.py plants large elements and checks
that the detail finds them. The copies past the default ones come from their own seeded stream,
so the default trap metrics do not change when the detail is asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wwaudit.spectral.spectra import Backend
from wwaudit.spectral.traps import TrapResult, layer_rng, shuffled_spectrum

TRAP_REPLICAS = 5  # shuffled copies the spread of each trap is measured over
TRAP_DETAIL_KEYS = ("trap_summary", "trap_lambdas", "trap_sigmas", "trap_rows", "trap_cols", "trap_slices", "trap_localization")


def participation_ratio(x: np.ndarray) -> float:
    """(Σx²)² / (n·Σx⁴): the share of entries a vector spreads over (1/n to 1)."""
    sq = x * x
    fourth = float(np.sum(sq * sq))
    return float(np.sum(sq)) ** 2 / (x.size * fourth) if fourth > 0 else 1.0


def _top_directions(mats: list[np.ndarray], count: int) -> list[tuple[float, int, np.ndarray, np.ndarray]]:
    """The `count` largest singular triplets over all slices: (σ, slice, u, v)."""
    found: list[tuple[float, int, np.ndarray, np.ndarray]] = []
    for index, W in enumerate(mats):
        u, s, vt = np.linalg.svd(np.asarray(W, dtype=np.float64), full_matrices=False)
        found.extend((float(s[k]), index, u[:, k], vt[k]) for k in range(min(count, s.size)))
    return sorted(found, key=lambda t: -t[0])[:count]


def _copies(mats: list[np.ndarray], traps: TrapResult, seed: int, scale: float, backend: Backend | None) -> list[np.ndarray]:
    """The default shuffled copies plus more from an independent stream, TRAP_REPLICAS in all."""
    copies = list(traps.copies)
    stream = np.random.default_rng(layer_rng(mats, seed).bit_generator.seed_seq.spawn(1)[0])  # type: ignore[attr-defined]
    while len(copies) < TRAP_REPLICAS:
        copies.append(shuffled_spectrum(mats, stream, backend) * scale)
    return copies


def trap_detail(
    mats: list[np.ndarray], traps: TrapResult, seed: int, scale: float = 1.0, backend: Backend | None = None
) -> dict[str, Any]:
    """The trap_* columns of one layer (see the module docstring); empty lists where no trap."""
    count = traps.num_traps or 0
    if traps.rand_edge is None or count == 0:
        empty: dict[str, Any] = {key: [] for key in TRAP_DETAIL_KEYS}
        empty["trap_summary"] = "none" if traps.num_traps == 0 else None
        return empty
    copies = _copies(mats, traps, seed, scale, backend)
    tops = np.array([[c[-k] for c in copies] for k in range(1, count + 1)])  # traps × copies
    medians = np.median(tops, axis=1)
    spreads = np.std(tops, axis=1, ddof=1)
    sigmas = [float((m - traps.rand_edge) / s) if s > 0 else None for m, s in zip(medians, spreads)]
    directions = _top_directions(mats, count)
    rows = [int(np.argmax(np.abs(u))) for _, _, u, _ in directions]
    cols = [int(np.argmax(np.abs(v))) for _, _, _, v in directions]
    local = [min(participation_ratio(u), participation_ratio(v)) for _, _, u, v in directions]
    parts = [
        f"λ {m:.4g} ({'–' if s is None else f'{s:.1f}σ'}) row {r} col {c} PR {p:.3f}"
        for m, s, r, c, p in zip(medians, sigmas, rows, cols, local)
    ]
    return {
        "trap_summary": "; ".join(parts),
        "trap_lambdas": [float(m) for m in medians],
        "trap_sigmas": sigmas,
        "trap_rows": rows,
        "trap_cols": cols,
        "trap_slices": [d[1] for d in directions],
        "trap_localization": local,
    }
