"""Options of one audit: everything that changes the numbers is here and echoed in the output."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AuditOptions:
    """Analysis settings (not output paths: those belong to the CLI)."""

    layers: str | None = None  # regex on layer name or tensor name
    fast: bool = False  # reference metric set only: no traps, no distribution comparison
    seed: int = 0  # for the element-shuffled copies (correlation traps)
    min_evals: int = 8
    max_evals: int | None = None  # None: no size gate
    workers: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
