"""Facts about a layer's matrices that need no spectrum: its gain, exact duplicate rows/columns, the spread of its
units' norms and the support of its values.

Both come from one pass over the stored values, in row chunks (a large embedding table is never
copied whole), before any eigenvalue is computed:

* ``log_gain`` = log10(‖W‖²_F / outputs): the mean squared norm of an output unit's weights over
  every kernel position of a conv, i.e. the variance an output receives from inputs of unit
  variance. Unlike λmax or the Frobenius norm it does not grow with the layer's shape: weight
  initialisers scale by 1/fan_in (torch's default gives exactly log10(1/3) = −0.48), and layers of
  one kind in a trained model stay within about one decade of each other (measured on the
  judgement benchmark's models, `benchmarks/judgement.py`), while a layer multiplied by 30 moves by
  2.95 decades. The conv normalisation of the ESD (metrics.CONV_NORM_FACTOR) is not applied here.
* ``dup_rows`` / ``dup_cols``: non-zero rows (output units) or columns (inputs) that repeat another
  row or column of the same matrix exactly, summed over the slices. Trained float weights do not
  repeat a whole row by chance; copies come from a merge or export bug (half a layer pasted over
  the other half) or from an exporter that materialised shared weights (grouped-query attention
  heads expanded to full width). All-zero rows are not counted: they are dead units, seen as rank
  loss. Rows shorter than ``MIN_DUP_LENGTH`` are not compared (a 1-element row repeats by design).
* ``dead_rows`` / ``dead_cols``: output units (rows, over every kernel position) and inputs
  (columns, over every position) whose weights are all numerically zero: norm at most
  ``DEAD_RELATIVE`` × the largest row (column) norm. Weight decay drives unused units there (1e-17
  to 1e-39 of the largest in the benchmark's models); each one removes a singular value per slice, so
  rules/findings.py can tell rank lost to dead units from rank lost to truncation or copies:
  ``dead_rank_loss`` is how many singular values they remove (over all slices), ``dead_share`` the
  larger of the dead shares of outputs and inputs.

* ``unit_norm_z``: how far the spread of the units' squared norms departs from what independent,
  identically distributed elements give, in standard errors (the larger of output rows and input
  columns, signed). With iid elements a unit's squared norm is a sum of n squares, whose CV² is
  (k − 1)/n (k = E[w⁴]/E[w²]², measured on the layer itself, so uniform and Gaussian initialisers
  both score about 0); the CV² estimated from R units has a standard error of about √(2/(R − 1))
  of that. Training gives units different norms (and a folded BatchNorm scales each row), so
  intact layers mostly sit far from 0; a re-initialised layer does not: |z| ≤ 3.13 for all 76
  re-initialised layers of the judgement benchmark. It needs no eigenvalues, so it also judges
  layers too small for the spectral random reference (rules/relative.py).

* ``support_ratio``: the largest |w| over √3 × the root mean square of all the layer's weights. A
  uniform distribution U(−b, b) has its whole support within √3 × its RMS, so every uniform
  initialiser (torch's default U(±1/√fan_in) for Linear, Conv and LSTM weights, Keras'
  glorot/he/lecun_uniform) gives 1 − O(1/n), with a standard error of √(0.2/n) from the RMS
  estimate of n weights; a Gaussian gives E max|w| / (√3 σ), about 2.0 for 10³ weights and 2.9 for 10⁶,
  and training leaves no layer bounded like that: 1.33 or more for every intact layer of at least
  256 weights in the judgement benchmark, where the 56 layers reset to torch's uniform default
  initialisation give 0.985–1.048 (`benchmarks/JUDGEMENT.md`, "Searching for a
  residual-distribution statistic"). rules/relative.py reads it as "still at a uniform
  initialisation" (WW016).
* ``levels_per_row``: the median number of distinct values in an output unit's weights (all kernel
  positions), over at most ``LEVEL_ROWS`` evenly spaced units. Float training gives about as many
  values as weights; weights rounded to k bits keep at most 2^k per unit (per-channel scales), so a
  float-stored layer with 4 or fewer is 2-bit quantised without a quantisation op.
  ``level_share``: the median share of distinct values among a unit's nonzero weights, 1.0 after
  float training (also when pruned: zeros are left out), at most 2^k / n for n weights rounded to
  k bits.

Rows are compared through a 64-bit hash of their stored bit patterns (Σ bits·r mod 2⁶⁴ with
fixed random odd multipliers r): exact integer arithmetic, so the result does not depend on the
summation order, the CPU or the BLAS; two different rows share a hash with probability 2⁻⁶⁴.
"""

from __future__ import annotations

import numpy as np

MIN_DUP_LENGTH = 8
MIN_UNITS = 4  # unit_norm_z needs at least this many rows (or columns) to estimate a spread
LEVEL_ROWS = 32
DEAD_RELATIVE = 1e-6
_CHUNK_BYTES = 8 << 20  # uint64 working copy per chunk
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _multipliers(n: int, salt: int) -> np.ndarray:
    """Fixed odd 64-bit multipliers (the same in every process and run)."""
    rng = np.random.default_rng(0x5EED + salt)
    return rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class _Pass:
    """One slice's running sums: squared norm, row hashes, column hashes, non-zero flags."""

    def __init__(self, W: np.ndarray) -> None:
        self.W = W
        rows, cols = W.shape
        self.row_sq = np.zeros(rows, dtype=np.float64)
        self.col_sq = np.zeros(cols, dtype=np.float64)
        self.row_hash = np.zeros(rows, dtype=np.uint64)
        self.row_nonzero = np.zeros(rows, dtype=bool)
        self.col_hash = np.zeros(cols, dtype=np.uint64)
        self.col_nonzero = np.zeros(cols, dtype=bool)
        self.fourth = 0.0  # Σ w⁴ (unit_norm_z's kurtosis)
        self.absmax = 0.0  # max |w| (support_ratio)
        self.r_cols = _multipliers(cols, 1)
        self.r_rows = _multipliers(rows, 2)

    def run(self) -> None:
        W = self.W
        rows, cols = W.shape
        bits_type = _UINT[W.dtype.itemsize]
        step = max(1, _CHUNK_BYTES // max(8 * cols, 1))
        with np.errstate(over="ignore"):
            for lo in range(0, rows, step):
                chunk = np.asarray(W[lo : lo + step])
                self.row_sq[lo : lo + step] = np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64)
                self.col_sq += np.einsum("ij,ij->j", chunk, chunk, dtype=np.float64)
                squares = np.square(chunk, dtype=np.float64)
                self.fourth += float(np.einsum("ij,ij->", squares, squares))
                if chunk.size:
                    self.absmax = max(self.absmax, float(np.max(np.abs(chunk))))
                nz = chunk != 0
                self.row_nonzero[lo : lo + step] = nz.any(axis=1)
                self.col_nonzero |= nz.any(axis=0)
                bits = np.ascontiguousarray(chunk).view(bits_type).astype(np.uint64)
                self.row_hash[lo : lo + step] = (bits * self.r_cols).sum(axis=1, dtype=np.uint64)
                self.col_hash += (bits * self.r_rows[lo : lo + step, None]).sum(axis=0, dtype=np.uint64)


def _repeats(hashes: np.ndarray, nonzero: np.ndarray, length: int) -> int:
    """How many non-zero entries repeat an earlier one (their hashes coincide)."""
    if length < MIN_DUP_LENGTH:
        return 0
    kept = hashes[nonzero]
    return int(kept.size - np.unique(kept).size)


def _dead(norms_sq: np.ndarray) -> int:
    top = float(norms_sq.max()) if norms_sq.size else 0.0
    return int(np.count_nonzero(norms_sq <= top * DEAD_RELATIVE**2)) if top > 0 else 0


def _levels(mats: list[np.ndarray], live: np.ndarray) -> tuple[int | None, float | None]:
    """Median count of distinct values per sampled live output unit (its weights at every position),
    and the median share of distinct values among a unit's nonzero weights.

    Dead units (all-zero rows) are left out: they hold one value by being dead, not by rounding.
    The share leaves zeros out so that a pruned unit (many zeros, every other weight its own value)
    is not taken for a rounded one.
    """
    width = sum(W.shape[1] for W in mats)
    rows = np.flatnonzero(live)
    if rows.size == 0 or width < MIN_DUP_LENGTH:
        return None, None
    picks = rows[np.unique(np.linspace(0, rows.size - 1, min(rows.size, LEVEL_ROWS)).astype(np.int64))]
    counts, shares = [], []
    for i in picks:
        values = np.unique(np.concatenate([np.asarray(W[i]) for W in mats]), return_counts=True)
        counts.append(values[0].size)
        nonzero = values[0] != 0
        if nonzero.any():
            shares.append(np.count_nonzero(nonzero) / float(values[1][nonzero].sum()))
    return int(np.median(counts)), float(np.median(shares)) if shares else None


def unit_norm_z(row_sq: np.ndarray, col_sq: np.ndarray, fourth: float, slices: int) -> float | None:
    """The signed z of the units' norm spread against iid elements (module docstring), rows or columns.

    `row_sq` / `col_sq`: squared norms of the output rows and input columns over all `slices`;
    `fourth`: Σ w⁴ over every element. None when no side has at least MIN_UNITS units.
    """
    total = float(row_sq.sum())
    count = row_sq.size * col_sq.size * slices
    if total <= 0 or count == 0 or not np.isfinite(total) or not np.isfinite(fourth):
        return None
    kurtosis = fourth * count / total**2  # uncentred: a unit's norm sums uncentred squares
    best: float | None = None
    for energies, width in ((row_sq, col_sq.size * slices), (col_sq, row_sq.size * slices)):
        units = energies.size
        if units < MIN_UNITS or width < 1 or kurtosis <= 1:
            continue
        mean = float(energies.mean())
        null = (kurtosis - 1) / width
        z = (float(energies.var()) / mean**2 / null - 1) / np.sqrt(2 / (units - 1))
        if best is None or abs(z) > abs(best):
            best = float(z)
    return best


def support_ratio(absmax: float, total: float, count: int) -> float | None:
    """max|w| / (√3 · RMS) of `count` weights whose squares sum to `total` (module docstring)."""
    if count == 0 or total <= 0 or not np.isfinite(total) or not np.isfinite(absmax):
        return None
    return float(absmax / np.sqrt(3.0 * total / count))


def structure_metrics(mats: list[np.ndarray]) -> dict[str, float | int | None]:
    """The structure metrics alone (structure_and_rows without the row hashes)."""
    return structure_and_rows(mats)[0]


def structure_and_rows(mats: list[np.ndarray]) -> tuple[dict[str, float | int | None], np.ndarray | None]:
    """``log_gain``, ``dup_rows``/``dup_cols`` and ``dead_rows``/``dead_cols`` of a layer's (out × in) slices,
    and the sorted unique hashes of the first slice's non-zero output rows (of at least MIN_DUP_LENGTH
    values): rows of equal length hash with the same multipliers in every layer, so a rule can find
    rows copied from one layer into another (None when the rows are too short).

    Every slice of a layer has the same (out × in) shape, so row i of each slice belongs to output
    unit i and column j to input j: their squared norms add up over the slices.
    """
    total, fourth, absmax, dup_rows, dup_cols = 0.0, 0.0, 0.0, 0, 0
    hashes: np.ndarray | None = None
    row_sq = np.zeros(mats[0].shape[0] if mats else 0)
    col_sq = np.zeros(mats[0].shape[1] if mats else 0)
    for W in mats:
        p = _Pass(W)
        p.run()
        total += float(p.row_sq.sum())
        fourth += p.fourth
        absmax = max(absmax, p.absmax)
        if hashes is None and W.shape[1] >= MIN_DUP_LENGTH:
            hashes = np.unique(p.row_hash[p.row_nonzero])
        dup_rows += _repeats(p.row_hash, p.row_nonzero, W.shape[1])
        dup_cols += _repeats(p.col_hash, p.col_nonzero, W.shape[0])
        if p.row_sq.shape == row_sq.shape and p.col_sq.shape == col_sq.shape:
            row_sq += p.row_sq
            col_sq += p.col_sq
    outputs, inputs = row_sq.size, col_sq.size
    gain = float(np.log10(total / outputs)) if outputs and total > 0 and np.isfinite(total) else None
    dead_rows, dead_cols = _dead(row_sq), _dead(col_sq)
    alive = max(0, min(outputs - dead_rows, inputs - dead_cols))
    top = float(row_sq.max()) if row_sq.size else 0.0
    live = row_sq > top * DEAD_RELATIVE**2 if top > 0 else np.zeros(row_sq.size, dtype=bool)
    levels, share = _levels(mats, live)
    return {
        "log_gain": gain,
        "levels_per_row": levels,
        "level_share": share,
        "unit_norm_z": unit_norm_z(row_sq, col_sq, fourth, len(mats)),
        "support_ratio": support_ratio(absmax, total, sum(W.shape[0] * W.shape[1] for W in mats)),
        "dup_rows": dup_rows,
        "dup_cols": dup_cols,
        "dead_rows": dead_rows,
        "dead_cols": dead_cols,
        "dead_share": max(dead_rows / outputs, dead_cols / inputs) if outputs and inputs else None,
        "dead_rank_loss": (min(outputs, inputs) - alive) * len(mats),
    }, hashes
