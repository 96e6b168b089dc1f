"""Correlation traps: eigenvalues of an element-shuffled copy of W that stick out of its MP bulk.

Shuffling the elements of W destroys every correlation between them and keeps their
distribution, so the shuffled ESD should be a Marchenko-Pastur bulk. Eigenvalues of the shuffled
copy above that bulk's edge (λ+ plus the Tracy-Widom margin, fitted with ``mp_fit.fit_mp``) come
from a few unusually large elements rather than learned structure: correlation traps
(Martin & Mahoney). ``rand_distance`` is the reference's Jensen-Shannon distance between the
sorted ESD and the sorted shuffled ESD (each normalised to sum 1).

Unlike the reference (``np.random.shuffle`` on the global, unseeded generator, so every run
differs), the shuffle is seeded: by AuditOptions.seed and a BLAKE2 digest of the layer's own
matrices, so a layer's result depends neither on the order in which layers are analysed nor on
which other layers are selected, and is the same in worker processes. For small layers (fewer
than 100 eigenvalues) the reference pools 5 shuffled copies to stabilise the MP fit; we do the
same for the fit, and count as traps only the directions that stand out in every copy (the
reference counts all 5, so its num_traps is 5× the number of trapped directions there; a single
copy of a small layer puts an eigenvalue above the edge by chance far more often than five do).

The shuffled copy is also the layer's own random reference: a matrix with exactly these elements
and no correlation between them. ``rand_lambda_max`` is its largest eigenvalue (the median over
the copies), ``num_rand_spikes`` counts the layer's eigenvalues above the higher of that and the
trap edge, and ``rand_lambda_ratio`` = λmax / that reference. A trained layer stands above its
shuffle (ratio ≥ 1.5 on the structured layers of the judgement benchmark); a layer left at its
random initialisation does not (ratio ≈ 1, no eigenvalue above): the evidence rules/findings.py
uses for WW011/WW012.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from wwaudit.spectral.mp_fit import fit_mp
from wwaudit.spectral.spectra import Backend, reference_evals

SMALL_LAYER_EVALS = 100  # below this many eigenvalues, 5 shuffled copies for the MP fit (reference)
SMALL_LAYER_REPLICAS = 5
SEED_SAMPLE = 256  # layer_rng hashes at most this many rows × columns of each matrix
# shuffled_copy: slices above this many elements are shuffled in cache-sized blocks of SHUFFLE_BLOCK
# (Fisher-Yates measured faster up to 4M elements, slower from 16M: 28 vs 34 and 49 vs 32 ns each)
BLOCKED_SHUFFLE_ABOVE = 1 << 23
SHUFFLE_BLOCK = 1 << 18


@dataclass(frozen=True)
class TrapResult:
    """``random_evals``: sorted eigenvalues of one shuffled copy (same count as the ESD, same
    conv scaling), for plots; ``rand_bulk_max``: the MP bulk edge λ+ of the shuffled ESD and
    ``rand_edge`` the trap threshold (λ+ plus Tracy-Widom margin), in the ESD's units."""

    num_traps: int | None
    rand_distance: float | None
    rand_bulk_max: float | None
    rand_edge: float | None
    random_evals: np.ndarray
    rand_lambda_max: float | None = None
    # the largest eigenvalue over all copies (the reference's max_rand_eval, --ww-extras)
    max_random: float | None = None
    # the shuffled ESDs themselves (trap_detail reads the spread of each trap over them)
    copies: tuple[np.ndarray, ...] = ()

    def reference_metrics(self, evals: np.ndarray) -> dict[str, float | int | None]:
        """How far the layer's ESD stands above its shuffled copy (None where there is no reference).

        The ratio compares like with like: λmax against the shuffled copy's own largest eigenvalue
        (for a random matrix both are draws of one law, ratio ≈ 1; against the fitted edge plus the
        Tracy-Widom margin a random 64-wide layer scored 0.85). The count takes the higher of the
        two, so that a spike the fit's margin would call noise is not counted.
        """
        top = self.rand_lambda_max or 0.0
        if top <= 0 or evals.size == 0:
            return {"rand_lambda_max": self.rand_lambda_max, "num_rand_spikes": None, "rand_lambda_ratio": None}
        return {
            "rand_lambda_max": self.rand_lambda_max,
            "num_rand_spikes": int(np.count_nonzero(evals > max(top, self.rand_edge or 0.0))),
            "rand_lambda_ratio": float(evals[-1] / top),
        }


def layer_rng(mats: list[np.ndarray], seed: int) -> np.random.Generator:
    """A generator seeded by ``seed`` and the layer's content (shapes and a strided sample).

    Hashing every byte cost as much as a tenth of the layer's eigen work and, for the transposed
    views layers.py hands over, a full contiguous copy first. A grid of at most
    SEED_SAMPLE × SEED_SAMPLE elements (taken in logical order, so the memory layout does not
    matter) is enough to give different layers different streams.
    """
    h = hashlib.blake2b(digest_size=16)
    for W in mats:
        h.update(repr(W.shape).encode())
        steps = tuple(max(1, -(-n // SEED_SAMPLE)) for n in W.shape)
        sample = W[tuple(slice(None, None, k) for k in steps)]
        h.update(np.ascontiguousarray(sample).reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # any dtype, bfloat16 too
    words = np.frombuffer(h.digest(), dtype=np.uint32)
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *map(int, words)]))


def shuffled_copy(
    W: np.ndarray, rng: np.random.Generator, block: int = SHUFFLE_BLOCK, blocked_above: int = BLOCKED_SHUFFLE_ABOVE
) -> np.ndarray:
    """A uniformly random permutation of W's elements: a new 1-D array in W's dtype.

    Elements are taken in W's storage order (a uniform shuffle does not care in which order they
    start; copying an ONNX MatMul weight's transposed view in C order cost 20-30 ms per 4096×1024
    slice, measured). Up to `blocked_above` elements: numpy's Fisher-Yates on one copy. Above,
    Fisher-Yates jumps all over an array larger than the caches (46-52 ns an element on a 30522 ×
    1024 table, against 13 ns in cache), so the same distribution is drawn in cache-sized pieces
    (Rao-Sandelius): the output is cut into ranges of about `block` elements; the input is read in
    chunks of `block`, each chunk is shuffled and dealt to the ranges in the numbers drawn from the
    multivariate hypergeometric distribution of the room left in each range; then every range is
    shuffled. Every assignment of elements to ranges of those sizes is equally likely, and so is
    every order inside a range: so is every permutation. Measured 32-33 ns an element from 16M
    elements up. Extra memory: the output (one slice), plus a copy only when W is not contiguous.
    """
    src = np.ravel(W, order="K")  # a view of W when W is C- or F-contiguous
    n = src.size
    if n <= blocked_above:
        # a plain ndarray copy: numpy shuffles only exact ndarrays in C (a np.memmap copy, still a
        # memmap, takes its element-by-element Python path: 9 s instead of 1.6 s, measured)
        flat = np.array(src, copy=True, subok=False)
        rng.shuffle(flat)
        return flat
    ranges = -(-n // block)
    bounds = np.linspace(0, n, ranges + 1).astype(np.int64)
    room = np.diff(bounds)
    cursor = bounds[:-1].copy()
    out = np.empty(n, dtype=src.dtype)
    ids = np.arange(ranges)
    for start in range(0, n, block):
        chunk = np.array(src[start : start + block], subok=False)
        rng.shuffle(chunk)
        counts = rng.multivariate_hypergeometric(room, chunk.size)
        # chunk position j goes to range r(j) (consecutive runs), at that range's cursor + its rank in the run
        run = np.repeat(ids, counts)
        rank = np.arange(chunk.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out[cursor[run] + rank] = chunk
        cursor += counts
        room -= counts
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rng.shuffle(out[lo:hi])
    return out


def shuffled_spectrum(mats: list[np.ndarray], rng: np.random.Generator, backend: Backend | None = None) -> np.ndarray:
    """Pooled sorted eigenvalues of element-shuffled copies of the layer's matrices.

    Each slice is shuffled into one new array (shuffled_copy): the extra memory is one slice,
    whatever the size of the layer. The eigenvalues are those of a random reference, computed in
    float32 (spectra.reference_evals explains why that is enough).
    """
    out = []
    for W in mats:
        flat = shuffled_copy(W, rng)
        out.append(reference_evals(flat.reshape(W.shape), backend))
        del flat
    return np.sort(np.concatenate(out))


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """The reference's rand_distance: JS distance of two non-negative vectors normalised to sum 1."""
    from scipy import stats  # here: scipy.stats costs start-up time that --fast never needs

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = (p / p.sum() + q / q.sum()) / 2
    divergence = (stats.entropy(p, m) + stats.entropy(q, m)) / 2
    return float(np.sqrt(max(divergence, 0.0)))  # rounding can make a zero divergence -1e-17


def correlation_traps(
    mats: list[np.ndarray],
    evals: np.ndarray,
    N: int,
    M: int,
    seed: int,
    scale: float = 1.0,
    backend: Backend | None = None,
) -> TrapResult:
    """Shuffle, take the ESD, fit its MP bulk, count eigenvalues above the edge.

    ``evals`` is the layer's (scaled) ESD; ``scale`` the factor applied to it (conv
    normalisation), applied to the shuffled ESD too so both are on one axis; ``backend`` the
    device of the eigensolver (spectra.Backend; the shuffled copy is solved in float32 whatever
    the precision asked for the weights).
    """
    rng = layer_rng(mats, seed)
    replicas = SMALL_LAYER_REPLICAS if evals.size < SMALL_LAYER_EVALS else 1
    copies = [shuffled_spectrum(mats, rng, backend) * scale for _ in range(replicas)]
    first = copies[0]
    rand_distance = jensen_shannon_distance(evals, first) if evals.size == first.size and evals.sum() > 0 else None
    top = float(np.median([c[-1] for c in copies])) if first.size else None
    largest = float(max(c[-1] for c in copies)) if first.size else None
    try:
        fit = fit_mp(np.concatenate(copies), N, M)
    except ValueError:
        return TrapResult(None, rand_distance, None, None, first, top, largest, tuple(copies))
    return TrapResult(
        num_traps=min(int(np.count_nonzero(c > fit.bulk_max_tw)) for c in copies),
        rand_distance=rand_distance,
        rand_bulk_max=fit.bulk_max,
        rand_edge=fit.bulk_max_tw,
        random_evals=first,
        rand_lambda_max=top,
        max_random=largest,
        copies=tuple(copies),
    )
