"""AuditOptions from Python keyword arguments, for the public API (wwaudit.audit, wwaudit.compare)."""

from __future__ import annotations

import dataclasses
from typing import Any

from wwaudit.engine.limits import parse_size
from wwaudit.engine.scheduler import default_workers
from wwaudit.options import AuditOptions


def audit_options(caller: str, options: dict[str, Any]) -> AuditOptions:
    """AuditOptions from keyword arguments, with the CLI's defaults (all cores, 8 GiB per layer).

    An unknown name is a TypeError that lists the valid ones (a typo must not be ignored)."""
    valid = [f.name for f in dataclasses.fields(AuditOptions)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"{caller}() got unknown option(s) {', '.join(unknown)}; options are: {', '.join(valid)}")
    options = dict(options)
    if options.get("workers") is None:
        options["workers"] = default_workers()
    if isinstance(options.get("max_memory"), str):
        options["max_memory"] = parse_size(options["max_memory"])
    return AuditOptions(**options)
