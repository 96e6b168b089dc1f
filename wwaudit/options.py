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

    # Settings that change how fast, never what: left out of the echoed options so the JSON is
    # byte-identical whatever the worker count.
    _EXECUTION_ONLY = ("workers",)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self._EXECUTION_ONLY}
