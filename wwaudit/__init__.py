"""wwaudit: data-free spectral audit of ONNX neural-network weights (Martin & Mahoney's method).

Python API (details: README, "Python API")::

    import wwaudit
    result = wwaudit.audit("model.onnx")          # an AuditResult
    result.verdict, result.findings, result.layers
    result.to_dataframe()                          # pandas, with the [dataframe] extra
    wwaudit.compare("base.onnx", "candidate.onnx") # a CompareResult

The names below load on first use, so `import wwaudit` (and the CLI's `--help`) stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "audit",
    "compare",
    "AuditResult",
    "LayerResult",
    "Finding",
    "ModelInfo",
    "CompareResult",
    "PairResult",
    "AuditOptions",
    "WwauditError",
    "__version__",
]

_LAZY = {
    "audit": "wwaudit.api",
    "AuditResult": "wwaudit.records",
    "LayerResult": "wwaudit.records",
    "Finding": "wwaudit.records",
    "ModelInfo": "wwaudit.records",
    "CompareResult": "wwaudit.compare.result",
    "PairResult": "wwaudit.compare.result",
    "AuditOptions": "wwaudit.options",
    "WwauditError": "wwaudit.errors",
}


def __getattr__(name: str) -> Any:
    if name == "compare":  # the wwaudit.compare package is callable (see its docstring)
        return importlib.import_module("wwaudit.compare")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wwaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "compare"])
