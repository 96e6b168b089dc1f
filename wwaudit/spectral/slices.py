"""Per-slice metrics (--per-slice): the reference's pool=False, one result per kernel position.

weightwatcher 0.7.7 with pool=False (its WW2xSliceIterator) analyses each kernel-position slice
of a Conv2D as a layer of its own, and scales every slice by √(count/2), count the number of
slices (apply_normalize_Wmats with conv2d_count = count), so a slice's ESD is λ·count/2 where the
pooled ESD is λ/2. wwaudit keeps one row per layer (the ids that rules, baselines and `compare`
key on stay the same) and adds the slices' results as lists in slice order — kernel position
i·kw + j, group by group, the order of the reference's rows: ``slice_lambda_max``,
``slice_alpha``, ``slice_D`` and ``slice_num_pl_spikes``, the i-th entry for slice i (JSON
arrays; ';'-joined in the CSV). A slice whose tail cannot be fitted (fewer than 8 eigenvalues
above 1e-5, e.g. a 3-input-channel first conv) has None where the reference reports its failed
fit's −1. Every conv kind gets them (Conv1d/3d, transposed); the reference slices Conv2D only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wwaudit.records import Storage
from wwaudit.spectral.powerlaw_fit import fit_power_law
from wwaudit.spectral.spectra import Backend, singular_values_squared

SLICE_KEYS = ("slice_lambda_max", "slice_alpha", "slice_D", "slice_num_pl_spikes")


def slice_metrics(mats: list[np.ndarray], kind: str, storage: Storage | float, backend: Backend) -> dict[str, Any]:
    """The slice_* lists of one layer; None for a layer that is not a conv of several slices."""
    if kind != "conv" or len(mats) < 2:
        return dict.fromkeys(SLICE_KEYS)
    scale = len(mats) / 2.0
    out: dict[str, list[Any]] = {key: [] for key in SLICE_KEYS}
    for W in mats:
        evals = singular_values_squared(W, storage, backend) * scale
        fit = fit_power_law(evals)
        out["slice_lambda_max"].append(float(evals[-1]) if evals.size else None)
        out["slice_alpha"].append(fit.alpha)
        out["slice_D"].append(fit.D)
        out["slice_num_pl_spikes"].append(fit.num_pl_spikes)
    return out
