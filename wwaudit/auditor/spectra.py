"""Eigenvalues of WᵀW for a layer's matrices: the empirical spectral density (ESD).

weightwatcher's convention: λ = σ², the squared singular values, NOT divided by N, all slices of
a layer (conv kernel positions, groups) pooled into one sorted array. We form the small-side
Gram matrix in float64 and call a symmetric eigensolver, 3-5x faster than an SVD. Its absolute
eigenvalue error is about eps64·λ_max, i.e. σ errors of about 1.5e-8·σ_max: far below the rank
threshold σ_max·N·eps for float32/float16 weights. For float64 weights that threshold is smaller
than the Gram error, so slices with singular values near it are recomputed with an SVD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tall matrices are reduced to their Gram matrix in row chunks of at most this many elements,
# so a vocab x hidden embedding table is never copied whole into float64.
GRAM_CHUNK_ELEMENTS = 1 << 24


@dataclass
class Spectrum:
    """Pooled eigenvalues (ascending) of one layer and the facts the metrics need."""

    evals: np.ndarray
    N: int
    M: int
    slices: int
    sv_max: float
    rank_loss: int


def gram(W: np.ndarray) -> np.ndarray:
    """The small-side Gram matrix (M x M) of W in float64, accumulated in row chunks."""
    rows, cols = W.shape
    if rows < cols:
        W = W.T
        rows, cols = cols, rows
    step = max(1, GRAM_CHUNK_ELEMENTS // max(cols, 1))
    G = np.zeros((cols, cols), dtype=np.float64)
    for start in range(0, rows, step):
        block = np.asarray(W[start : start + step], dtype=np.float64)
        G += block.T @ block
    return G


def singular_values_squared(W: np.ndarray, eps: float) -> np.ndarray:
    """σ² of W (ascending), via the Gram matrix, falling back to SVD where rank needs precision."""
    G = gram(W)
    evals = np.linalg.eigvalsh(G)
    evals = np.clip(evals, 0.0, None)
    N = max(W.shape)
    sv_max = float(np.sqrt(evals[-1])) if evals.size else 0.0
    threshold = sv_max * N * eps
    # Gram eigenvalues carry an absolute error of ~ M·eps64·λ_max: σ below this is noise.
    gram_noise = sv_max * np.sqrt(G.shape[0] * np.finfo(np.float64).eps) * 10
    if threshold < gram_noise and np.any(np.sqrt(evals) < gram_noise):
        sv = np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)
        evals = np.sort(sv * sv)
    return evals


def layer_spectrum(mats: list[np.ndarray], eps: float) -> Spectrum:
    """Pool the eigenvalues of all slices of a layer; count rank loss per slice (σ ≤ σ_max·N·eps)."""
    all_evals = []
    rank_loss = 0
    N = max(max(m.shape) for m in mats)
    M = min(min(m.shape) for m in mats)
    for W in mats:
        ev = singular_values_squared(W, eps)
        sv = np.sqrt(ev)
        n = max(W.shape)
        tol = sv.max() * n * eps if sv.size else 0.0
        rank_loss += int(np.count_nonzero(sv <= tol))
        all_evals.append(ev)
    evals = np.sort(np.concatenate(all_evals)) if all_evals else np.zeros(0)
    sv_max = float(np.sqrt(evals[-1])) if evals.size else 0.0
    return Spectrum(evals=evals, N=N, M=M, slices=len(mats), sv_max=sv_max, rank_loss=rank_loss)
