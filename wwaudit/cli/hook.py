"""pre-commit entry point: audit every staged .onnx file, each as `wwaudit MODEL [args]` would.

pre-commit passes the hook's `args` first and then the file names; `wwaudit` audits one model per
run, so this splits them (a token ending in .onnx is a model unless it is the value of
--reference), audits each model in turn and exits with the worst exit code (2 > 1 > 0), so one
failing model fails the commit and the others are still reported.
"""

from __future__ import annotations

import sys
from typing import Sequence

from wwaudit.cli.main import main as audit_main

_TAKES_MODEL = ("--reference",)


def split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(models, options) from pre-commit's argument list."""
    models: list[str] = []
    options: list[str] = []
    for i, token in enumerate(argv):
        if token.lower().endswith(".onnx") and not (i and argv[i - 1] in _TAKES_MODEL):
            models.append(token)
        else:
            options.append(token)
    return models, options


def main(argv: Sequence[str] | None = None) -> int:
    """Audit each model; the exit code is the worst of the runs (0 when no model was passed)."""
    models, options = split(list(sys.argv[1:] if argv is None else argv))
    worst = 0
    for model in models:
        print(f"wwaudit: {model}", file=sys.stderr, flush=True)
        worst = max(worst, audit_main([model, *options]))
    return worst


if __name__ == "__main__":
    sys.exit(main())
