"""Eigenvector localisation (--vectors), as weightwatcher 0.7.7's apply_analyze_eigenvectors.

For each slice, the eigenvectors of the small-side Gram matrix (WWᵀ or WᵀW, whichever is
smaller: the singular vectors on the short side); for each eigenvector v, the reference's

* vec_entropy: ``discrete_entropy`` — the entropy of a 100-bin density histogram of
  |v| − mean|v|, each bin + 1e-10, renormalised (a spread vector fills many bins);
* loc_ratio: ``localization_ratio`` = ‖v‖₁ / ‖v‖∞ (n for a flat unit vector, 1 for one entry);
* part_ratio: ``participation_ratio`` = ‖v‖₂ / ‖v‖₄ (n^¼ flat, 1 for one entry).

Eigenvectors whose eigenvalue is ≥ the tail fit's xmin are the tail, the others the bulk: the
num_pl_spikes largest ones, chosen by rank, since the eigenvalue at xmin, recomputed here with its
vector, can come out one rounding below xmin and drop out of a comparison; the columns are the mean and the (population) variance of each metric over
each part: ``tail_mean_loc_ratio`` and so on, the reference's names. A part with no eigenvector
gives None where the reference writes NaN. Without a tail fit (status fit_failed) there is no
xmin and the columns are None; the reference then uses its xmin of −1 and calls everything tail.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wwaudit.layer_metrics import OPTIONAL_COLUMNS

VECTOR_KEYS = tuple(k for k in OPTIONAL_COLUMNS if k.endswith(("_vec_entropy", "_loc_ratio", "_part_ratio")))
ENTROPY_BINS = 100
_EPSILON = 1e-10  # the reference's EPSILON in discrete_entropy


def discrete_entropy(vecs: np.ndarray) -> np.ndarray:
    """The reference's discrete_entropy of every column of `vecs`."""
    out = np.empty(vecs.shape[1])
    for j in range(vecs.shape[1]):
        a = np.abs(vecs[:, j])
        h = np.histogram(a - a.mean(), density=True, bins=ENTROPY_BINS)[0]
        p = (h + _EPSILON) / np.sqrt(2 * np.pi)
        p = p / p.sum()
        out[j] = -np.sum(p * np.log(p))
    return out


def _slice_vectors(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors (columns) of the small-side Gram matrix of one slice."""
    W = np.asarray(W, dtype=np.float64)
    X = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
    return np.linalg.eigh(X)


def vector_metrics(mats: list[np.ndarray], tail_size: int | None) -> dict[str, Any]:
    """The 12 tail/bulk localisation columns of one layer (see the module docstring); `tail_size`
    is the tail fit's num_pl_spikes (None without a fit)."""
    if tail_size is None:
        return dict.fromkeys(VECTOR_KEYS)
    evals, ent, loc, part = [], [], [], []
    for W in mats:
        ev, V = _slice_vectors(W)
        evals.append(ev)
        ent.append(discrete_entropy(V))
        loc.append(np.sum(np.abs(V), axis=0) / np.max(np.abs(V), axis=0))
        part.append(np.linalg.norm(V, axis=0) / np.sum(V**4, axis=0) ** 0.25)
    order = np.argsort(np.concatenate(evals), kind="stable")
    tail = np.zeros(order.size, dtype=bool)
    tail[order[order.size - min(tail_size, order.size) :]] = True
    out: dict[str, Any] = {}
    for name, values in (("vec_entropy", ent), ("loc_ratio", loc), ("part_ratio", part)):
        data = np.concatenate(values)
        for part_name, mask in (("bulk", ~tail), ("tail", tail)):
            chosen = data[mask]
            out[f"{part_name}_mean_{name}"] = float(np.mean(chosen)) if chosen.size else None
            out[f"{part_name}_var_{name}"] = float(np.var(chosen)) if chosen.size else None
    return {k: out[k] for k in VECTOR_KEYS}
