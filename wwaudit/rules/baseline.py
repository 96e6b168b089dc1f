"""Baselines: an accepted earlier wwaudit JSON, so a CI gate fails on new findings only.

A finding matches the baseline on rule + layer name + source tensor, never on metric values
(alpha moving from 1.71 to 1.69 is the same finding). Model-level findings match on the rule
alone, graph problems (WW000) on their message. The baseline's own suppressed-by-baseline
findings count too, so a run's JSON can serve as the next run's baseline.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from wwaudit.records import SCHEMA, Finding
from wwaudit.errors import UsageError

Key = tuple[str, str | None, str | None]


def finding_key(rule: str, layer: str | None, tensor: str | None, message: str) -> Key:
    """What identifies a finding across runs."""
    if layer is None:
        return (rule, None, message if rule == "WW000" else None)
    return (rule, layer, tensor)


@dataclass(frozen=True)
class Baseline:
    """The accepted findings of an earlier audit."""

    name: str
    keys: frozenset[Key]

    def contains(self, finding: Finding) -> bool:
        key = finding_key(finding.rule, finding.layer, finding.tensor, finding.message)
        # A baseline written before findings carried their tensor matches on rule + layer.
        return key in self.keys or (key[0], key[1], None) in self.keys


def load_baseline(path: str) -> Baseline:
    """Read an earlier `--json` output; anything else is a usage error (exit 2, one line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise UsageError(f"--baseline {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"--baseline {path}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--baseline {path}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("findings"), list):
        raise UsageError(f"--baseline {path}: not a wwaudit JSON output (schema {SCHEMA})")
    entries: list[Any] = list(doc["findings"])
    entries += [f for f in doc.get("suppressed", []) if isinstance(f, dict) and f.get("suppressed_by") == "baseline"]
    keys = set()
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("rule"), str):
            raise UsageError(f"--baseline {path}: malformed finding entry")
        keys.add(finding_key(entry["rule"], entry.get("layer"), entry.get("tensor"), str(entry.get("message", ""))))
    return Baseline(os.path.basename(path), frozenset(keys))
