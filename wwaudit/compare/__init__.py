"""Two models layer by layer (base -> candidate): matching, metric deltas, matrix differences, rules.

`wwaudit.compare(base, candidate, **options)` is the public entry point, and it is this package:
Python binds a package's name on its parent as soon as any of its modules loads, so a function
`wwaudit.compare` would be replaced by the package on first use. The package therefore answers
the call itself (the module class below); `wwaudit.compare.compare` is the same function.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wwaudit.compare.result import CompareResult


def compare(base: str, candidate: str, *, progress: Any | None = None, **options: Any) -> CompareResult:
    """Compare two ONNX files layer by layer (base -> candidate); returns the CompareResult that
    `wwaudit compare --json` writes: `.layers` are the matched layer pairs with their metric deltas
    and matrix differences, `.findings` and `.verdict` the comparison's rules. The options are
    wwaudit.audit()'s analysis options (layers, fast, seed, max_evals, workers, precision, device,
    max_memory). Bad input raises wwaudit.errors.WwauditError."""
    from wwaudit.compare.engine import compare as run_compare
    from wwaudit.engine.settings import audit_options

    return run_compare(base, candidate, audit_options("compare", options), progress)


class _CallablePackage(types.ModuleType):
    def __call__(self, base: str, candidate: str, **kwargs: Any) -> CompareResult:
        return compare(base, candidate, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
