"""Options of one audit: everything that changes the numbers is here and echoed in the output."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# per layer task; engine/limits.py reads it from here (options sit below the engine)
DEFAULT_MAX_MEMORY = 8 * 1024**3  # fits the 16 GB runners of common CI services with room to spare


@dataclass(frozen=True)
class AuditOptions:
    """Analysis settings (not output paths: those belong to the CLI)."""

    layers: str | None = None  # regex on layer name or tensor name
    fast: bool = False  # reference metric set only: no traps, no distribution comparison
    seed: int = 0  # for the element-shuffled copies (correlation traps)
    max_evals: int | None = None  # None: no size gate
    workers: int = 1  # layers analysed side by side (the CLI defaults to the usable cores)
    precision: str = "float64"  # Gram accumulation: float64, or float32 (spectra.py: error bound)
    device: str = "cpu"  # cpu, or cuda (torch) for Gram + eigensolver
    max_memory: int | None = DEFAULT_MAX_MEMORY  # bytes per layer task (limits.py); larger layers are skipped
    # Opt-in metrics (README, "Optional metrics"): off by default, echoed in the output only when on.
    fix_fingers: str | None = None  # None, "xmin_peak" or "clip_xmax": finger fixing of the tail fit
    hill: bool = False  # alpha_hill: the Hill estimator with xmin at the median eigenvalue
    detx: bool = False  # detX_num, detX_val, num_ERG_spikes, ERG_gap (SETOL's detX = 1 condition)
    ww_extras: bool = False  # sv_min, max_rand_eval, ww_softrank, ww_maxdist
    vectors: bool = False  # eigenvector localisation of the tail and bulk singular vectors
    trap_detail: bool = False  # per-trap direction, distance beyond the shuffled bulk, localisation
    per_slice: bool = False  # conv layers: metrics of every kernel-position slice (the reference's pool=False)

    # Settings that change how fast, never what: left out of the echoed options so the JSON is
    # byte-identical whatever the worker count.
    _EXECUTION_ONLY = ("workers",)

    # Opt-in settings left out of the echo while at their default, so that an audit without them
    # writes the same bytes as before they existed.
    _OPT_IN = ("fix_fingers", "hill", "detx", "ww_extras", "vectors", "trap_detail", "per_slice")

    def to_dict(self) -> dict[str, Any]:
        defaults = AuditOptions()
        return {
            k: v
            for k, v in asdict(self).items()
            if k not in self._EXECUTION_ONLY and not (k in self._OPT_IN and v == getattr(defaults, k))
        }
