"""Eigenvalues of WᵀW for a layer's matrices: the empirical spectral density (ESD).

weightwatcher's convention: λ = σ², the squared singular values, NOT divided by N, all slices of
a layer (conv kernel positions, groups) pooled into one sorted array. We form the small-side
Gram matrix and call a symmetric eigensolver, 3-5x faster than an SVD.

Rank. A singular value counts as numerically zero (rank_loss) when it is indistinguishable from
zero given how it was computed and stored (README, "Method in brief"): below the computation's
resolution (σ_max·max(N, M)·eps64 for an SVD; σ_max·√(M·eps64)·10 for the Gram route, whose
results are kept only where that settles the count, else the unresolved values are recomputed
from W's QR factor or the slice with an SVD: _settle_small),
or below the noise floor that rounding at storage time adds, τ = (eps_s·rms(W) + tiny_s +
step_s)·(√N + √M) (storage_floor), where the singular values there form a noise bulk (clearly
more of them below τ than in (τ, 4τ]: a rank-k matrix rounded to a coarse dtype has N−k singular
values below τ and few above; a full-rank matrix's spectrum runs on continuously through τ, and
then only the computation's resolution applies).

Precision. By default the Gram matrix is accumulated in float64: its absolute eigenvalue error
is about eps64·λ_max·M, i.e. σ errors of about σ_max·√(M·eps64) (GRAM_NOISE). Slices with a
singular value below that, whose rank count the Gram route cannot settle, have those few values
recomputed from W's QR factor (_settle_small), or the whole slice with an SVD. `precision="float32"` accumulates the Gram matrix in float32 (half the memory traffic, twice the
BLAS speed) and solves it in float64: eigenvalue errors are then about eps32·λ_max, harmless for
the power-law tail (α agrees to ~1e-7 on the benchmark matrices) but not for counting tiny
singular values, so any slice with an eigenvalue within that error of zero or of a rank threshold
(τ, 4τ) is recomputed in float64 and rank metrics are identical in both precisions. Measured on the
BERT-large benchmark, square weights nearly always have such eigenvalues (their spectrum reaches
down to 0), so float32 is used only for matrices at least FLOAT32_MIN_ASPECT times taller than
wide (FFN projections, embeddings), where the Gram step dominates and float32 pays.

Device. "cpu" uses numpy/LAPACK; "cuda" (and "torch-cpu", torch's own CPU kernels, used to test
that code path without a GPU) form the Gram matrix and solve it with torch. Only eigenvalues come
back to the host.

Tall matrices (vocab x hidden embeddings) are reduced in row chunks, so a table is never copied
whole into float64: peak memory is the stored tensor plus one chunk plus the M x M Gram matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wwaudit.errors import UsageError
from wwaudit.records import Storage  # noqa: F401  (defined with the plain data; re-exported here)

# Tall matrices are reduced to their Gram matrix in row chunks of at most this many elements.
GRAM_CHUNK_ELEMENTS = 1 << 22
# Unresolved small singular values (below the Gram route's resolution) are settled by inverse
# subspace iteration (_settle_small) when there are at most SETTLE_MAX of them, with SETTLE_EXTRA
# more vectors in the block, at most SETTLE_ITERATIONS steps, and only when they lie SETTLE_MARGIN
# times above an SVD's resolution; otherwise an SVD settles them.
SETTLE_MAX = 8
SETTLE_EXTRA = 4
SETTLE_ITERATIONS = 40
SETTLE_MARGIN = 100.0

PRECISIONS = ("float64", "float32")
# --precision float32 applies to matrices at least this much taller than wide (see below).
FLOAT32_MIN_ASPECT = 2
DEVICES = ("cpu", "cuda", "torch-cpu")  # torch-cpu: the torch code path on the CPU (tests, no GPU)

# Eigenvalues below this are where metrics count weak rank loss (1e-6, after any ESD scaling down
# to 0.1): float32 Gram results there are recomputed in float64 so the count stays exact.
_WEAK_RANK_BAND = 1e-5
_EPS32 = float(np.finfo(np.float32).eps)
_EPS64 = float(np.finfo(np.float64).eps)
# reference_evals takes float32 only for entries whose squares, summed over a column, stay far
# inside float32's range (max 3.4e38, smallest normal 1.2e-38).
_FLOAT32_SAFE_PEAK = 1e-15
_FLOAT32_SAFE_SUM = 1e36


@dataclass(frozen=True)
class Backend:
    """Where and in which precision Gram matrices are formed and solved."""

    precision: str = "float64"
    device: str = "cpu"

    @classmethod
    def of(cls, options: Any) -> "Backend":
        """The backend an AuditOptions asks for (defaults when `options` is None or lacks the fields)."""
        if options is None:
            return cls()
        return cls(getattr(options, "precision", "float64"), getattr(options, "device", "cpu"))

    @property
    def uses_torch(self) -> bool:
        return self.device != "cpu"


def check_backend(backend: Backend) -> None:
    """Raise UsageError when the requested precision/device cannot run here (exit code 2)."""
    if backend.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if backend.device not in DEVICES:
        raise UsageError(f"--device must be one of cpu, cuda (got '{backend.device}')")
    if not backend.uses_torch:
        return
    try:
        import torch
    except ImportError:
        raise UsageError(f"--device {backend.device} needs torch, which is not installed") from None
    if backend.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch finds no usable CUDA device")


@dataclass
class Spectrum:
    """Pooled eigenvalues (ascending) of one layer and the facts the metrics need."""

    evals: np.ndarray
    N: int
    M: int
    slices: int
    sv_max: float
    rank_loss: int


def storage_floor(shape: tuple[int, ...], sq_norm: float, storage: Storage) -> float:
    """Largest singular value that storage rounding alone can put in place of a zero one.

    Rounding adds E to the exact matrix, with independent elements of rms at most
    eps/2·|w|/√3 (float: relative error uniform in ±eps/2), tiny/√12 (subnormals) or step/√12
    (integer codes); a random N×M matrix of elementwise rms s has ‖E‖₂ ≈ s(√N + √M) (Bai-Yin).
    Weyl: each singular value moves by at most ‖E‖₂, so a stored σ below it is consistent with a
    zero one. The bound here, (eps·rms(W) + tiny + step)(√N + √M), is 2√3 ≈ 3.5× that estimate,
    to cover weights whose magnitudes vary by row or column (the collapsed sample stored in
    float16: ‖E‖₂ was 2.2× the homogeneous estimate).
    """
    n, m = shape
    rms = np.sqrt(sq_norm / max(n * m, 1))
    return float((storage.eps * rms + storage.tiny + storage.step) * (np.sqrt(n) + np.sqrt(m)))


def _noise_bulk(sv: np.ndarray, floor: float) -> bool:
    """Whether the singular values below `floor` form a bulk of their own: more of them below it
    than in (floor, 4·floor], by more than twice the count's Poisson spread (√(band + 1)).

    That is what a rank-deficient matrix plus rounding noise looks like (N − k values below the
    floor, few above), as opposed to a continuous spectrum that merely runs on through the floor
    (a density near zero puts about three times as many values in the band as below it). One or
    two isolated values are not a bulk: the smallest singular value of a full-rank square matrix
    sits alone near zero too (exact zeros are still counted, by the computation's resolution).
    """
    below = int(np.count_nonzero(sv <= floor))
    band = int(np.count_nonzero((sv > floor) & (sv <= 4 * floor)))
    return below > band + 2 * np.sqrt(band + 1)


def count_rank_loss(sv: np.ndarray, resolution: float, cut: float) -> int:
    """Singular values indistinguishable from zero: below the computation's `resolution`, or
    below `cut` (the storage floor) when they form a noise bulk there."""
    tol = resolution
    if cut > tol and _noise_bulk(sv, cut):
        tol = cut
    return int(np.count_nonzero(sv <= tol))


def _tall(W: np.ndarray) -> np.ndarray:
    return W.T if W.shape[0] < W.shape[1] else W


def _chunks(W: np.ndarray, dtype: type) -> Any:
    """Row chunks of a tall matrix converted to `dtype` one at a time (memory maps stay on disk)."""
    rows, cols = W.shape
    step = max(1, GRAM_CHUNK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield np.asarray(W[start : start + step], dtype=dtype)


def gram(W: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """The small-side Gram matrix (M x M) of W, accumulated in row chunks in `dtype`."""
    W = _tall(W)
    G: np.ndarray = np.zeros((W.shape[1], W.shape[1]), dtype=dtype)
    for block in _chunks(W, dtype):
        G += block.T @ block
        del block  # before the next chunk is read: one chunk in memory at a time, not two
    return G


def _torch_eigvals(W: np.ndarray, precision: str, device: str, solve: str = "float64") -> np.ndarray:
    import torch

    dev = torch.device("cpu" if device == "torch-cpu" else device)
    np_dtype = np.float32 if precision == "float32" else np.float64
    W = _tall(W)
    G = torch.zeros((W.shape[1], W.shape[1]), dtype=torch.float64 if precision == "float64" else torch.float32, device=dev)
    for block in _chunks(W, np_dtype):
        # a float64 memory map passes through _chunks uncopied and read-only: torch wants to own it
        t = torch.from_numpy(block if block.flags.writeable else block.copy()).to(dev)
        G += t.T @ t
    solver_dtype = torch.float64 if solve == "float64" else torch.float32
    return torch.linalg.eigvalsh(G.to(solver_dtype)).cpu().numpy().astype(np.float64)


def _gram_eigvals(W: np.ndarray, precision: str, device: str) -> np.ndarray:
    """Ascending eigenvalues of the Gram matrix, clipped at 0."""
    if device != "cpu":
        evals = _torch_eigvals(W, precision, device)
    else:
        G = gram(W, np.float32 if precision == "float32" else np.float64)
        evals = np.linalg.eigvalsh(G.astype(np.float64, copy=False))
    return np.clip(evals, 0.0, None)


def _svd_eigvals(W: np.ndarray, device: str) -> np.ndarray:
    if device != "cpu":
        import torch

        dev = torch.device("cpu" if device == "torch-cpu" else device)
        sv = torch.linalg.svdvals(torch.from_numpy(np.asarray(W, dtype=np.float64)).to(dev)).cpu().numpy()
    else:
        sv = np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)
    return np.sort(sv * sv)


def _float32_ambiguous(evals: np.ndarray, M: int, floor: float) -> bool:
    """Whether float32 Gram errors could change a rank count: an eigenvalue near 0, near the
    weak-rank tolerance, or near the storage floor's thresholds (τ², (4τ)²)."""
    if not evals.size:
        return False
    noise = evals[-1] * _EPS32 * np.sqrt(M) * 2
    if evals[0] <= noise + _WEAK_RANK_BAND:
        return True
    return any(bool(np.any(np.abs(evals - t * t) <= noise)) for t in (floor, 4 * floor))


def _slice_spectrum(W: np.ndarray, storage: Storage, backend: Backend) -> tuple[np.ndarray, float, float]:
    """σ² of one slice (ascending), the σ resolution of the route that computed them, and the
    cut below which a noise bulk counts as zero (the storage floor, or the Gram route's
    resolution where that is coarser)."""
    N, M = max(W.shape), min(W.shape)
    # float32 only where it can stand: square-ish weights have singular values near 0 (the
    # Marchenko-Pastur lower edge (1 - sqrt(M/N))^2 vanishes) and would be recomputed anyway.
    precision = backend.precision if N >= FLOAT32_MIN_ASPECT * M else "float64"
    evals = _gram_eigvals(W, precision, backend.device)
    if not evals.size:
        return evals, 0.0, 0.0
    floor = storage_floor(W.shape, float(np.sum(evals)), storage)
    if precision == "float32" and _float32_ambiguous(evals, M, floor):
        evals = _gram_eigvals(W, "float64", backend.device)
    sv = np.sqrt(evals)
    # Gram eigenvalues carry an absolute error of ~ M·eps64·λ_max: σ below this is unresolved.
    gram_noise = float(sv[-1] * np.sqrt(M * _EPS64) * 10)
    cut = max(floor, gram_noise)
    if sv[0] >= gram_noise or _noise_bulk(sv, cut):
        return evals, gram_noise, cut
    # a few isolated small σ the Gram route cannot resolve: inverse iteration on W's R factor
    # settles them, or, where it cannot, an SVD
    resolution = float(sv[-1]) * N * _EPS64
    settled = _settle_small(W, evals, gram_noise, resolution) if backend.device == "cpu" else None
    if settled is not None:
        return settled, resolution, floor
    evals = _svd_eigvals(W, backend.device)
    return evals, float(np.sqrt(evals[-1])) * N * _EPS64, floor


def _settle_small(W: np.ndarray, evals: np.ndarray, gram_noise: float, resolution: float) -> np.ndarray | None:
    """The Gram eigenvalues with the few σ below `gram_noise` recomputed to an SVD's accuracy, or
    None where an SVD must settle them.

    Why: a random square weight has its smallest σ near σmax/(2N), below the Gram route's
    resolution in about one matrix in twelve (two of four 4096² projections of the int4 Llama
    benchmark), and a values-only SVD of such a matrix costs ten eigensolves (measured). The
    small σ of W are those of R (W = QR, backward stable: errors ~eps64·σmax, as an SVD's), and
    inverse subspace iteration with R's triangular solves converges to the smallest ones in a few
    steps: one QR (about an eigensolve's cost) instead of an SVD. The iteration's Ritz values
    replace only the unresolved eigenvalues; the rest are the Gram route's. None (the SVD) when
    more than SETTLE_MAX σ are unresolved, R is singular, the iteration does not converge, or a
    settled σ lies within SETTLE_MARGIN of the SVD's `resolution` (a count the SVD must make).
    """
    from scipy.linalg import qr, solve_triangular

    k = int(np.count_nonzero(np.sqrt(evals) < gram_noise))
    M = evals.size
    block = k + SETTLE_EXTRA
    if not 0 < k <= SETTLE_MAX or M < 2 * block:
        return None
    R = qr(np.array(_tall(W), dtype=np.float64), mode="r", overwrite_a=True, check_finite=False)[0][:M]
    X = np.linalg.qr(np.random.default_rng(0).standard_normal((M, block)))[0]
    previous = None
    try:
        with np.errstate(all="ignore"):
            for _ in range(SETTLE_ITERATIONS):
                X = np.linalg.qr(solve_triangular(R, solve_triangular(R, X, trans="T", check_finite=False), check_finite=False))[
                    0
                ]
                ritz = np.sort(np.linalg.svd(R @ X, compute_uv=False))[:k]
                if previous is not None and np.all(np.abs(ritz - previous) <= 1e-10 * ritz):
                    break
                previous = ritz
            else:
                return None
    except np.linalg.LinAlgError:  # an exactly singular R (a zero on its diagonal)
        return None
    if not np.all(np.isfinite(ritz)) or ritz[0] <= SETTLE_MARGIN * resolution:
        return None
    settled = evals.copy()
    settled[:k] = ritz * ritz
    return np.sort(settled)


def singular_values_squared(W: np.ndarray, storage: Storage | float, backend: Backend | None = None) -> np.ndarray:
    """σ² of W (ascending), via the Gram matrix, falling back to float64 or SVD where rank needs it.

    W may be any float dtype, including a read-only memory map: it is widened chunk by chunk.
    `storage` (a Storage, or the stored float format's epsilon) sets the storage noise floor.
    """
    return _slice_spectrum(W, Storage.of(storage), backend or Backend())[0]


def reference_evals(W: np.ndarray, backend: Backend | None = None) -> np.ndarray:
    """σ² (ascending) of a *random reference* matrix, e.g. an element-shuffled copy of a weight:
    float32 Gram matrix and float32 eigensolver.

    Why float32 here and not for the weights themselves: the eigenvalues of a shuffled copy are a
    sample, and they move by far more from one shuffle to the next (the MP edge fluctuates by
    ~λ+·N^(-2/3)) than float32 rounding moves them (~eps32·λmax·√M, measured 6e-6·λmax on a
    4096×1024 BERT weight); nothing counts their small singular values (rank metrics come from the
    unshuffled weights). Halving the bytes halves the Gram step, and LAPACK's ssyevr is ~1.3-1.6×
    faster than dsyevd at M = 1024-2048 (scipy's; numpy's float32 eigvalsh is no faster than its
    float64 one, measured). Weights whose squares could overflow or vanish in float32 (possible
    for float64 weights only) take the float64 path.
    """
    backend = backend or Backend()
    peak = float(max(np.max(W), -np.min(W))) if W.size else 0.0
    if not (_FLOAT32_SAFE_PEAK < peak and max(W.shape) * peak * peak < _FLOAT32_SAFE_SUM):
        return _gram_eigvals(W, "float64", backend.device)
    if backend.device != "cpu":
        evals = _torch_eigvals(W, "float32", backend.device, solve="float32")
    else:
        from scipy.linalg import eigh

        G = gram(W, np.float32)
        evals = eigh(G, eigvals_only=True, driver="evr", overwrite_a=True, check_finite=False).astype(np.float64)
    return np.clip(np.sort(evals), 0.0, None)


def layer_spectrum(mats: list[np.ndarray], storage: Storage | float, options: Any = None) -> Spectrum:
    """Pool the eigenvalues of all slices of a layer; count rank loss per slice (count_rank_loss).

    `storage` describes how the values were stored (Storage, or a float format's epsilon);
    `options` (an AuditOptions or None) selects precision and device (see Backend.of).
    """
    backend = Backend.of(options)
    storage = Storage.of(storage)
    all_evals = []
    rank_loss = 0
    N = max(max(m.shape) for m in mats)
    M = min(min(m.shape) for m in mats)
    for W in mats:
        ev, resolution, cut = _slice_spectrum(W, storage, backend)
        rank_loss += count_rank_loss(np.sqrt(ev), resolution, cut)
        all_evals.append(ev)
    evals = np.sort(np.concatenate(all_evals)) if all_evals else np.zeros(0)
    sv_max = float(np.sqrt(evals[-1])) if evals.size else 0.0
    return Spectrum(evals=evals, N=N, M=M, slices=len(mats), sv_max=sv_max, rank_loss=rank_loss)
