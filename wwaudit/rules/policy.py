"""The audit policy: which rules run, with which thresholds and severities, and what fails a run.

A team keeps it in `wwaudit.toml` or under `[tool.wwaudit]` in pyproject.toml, found by walking up
from the working directory (the nearest file that has a policy wins), or names it with
`--policy PATH`. Precedence: command line > policy file > the registry's defaults. A policy that
cannot be read or says something impossible is a UsageError (exit 2, one line), never ignored:
a silently dropped threshold would change what a CI gate lets through.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from wwaudit.rules.findings import FAIL_ON_LEVELS, RULES, RULES_BY_ID, SEVERITIES, alpha_band
from wwaudit.errors import UsageError

POLICY_FILE = "wwaudit.toml"
PYPROJECT = "pyproject.toml"
_TOP_KEYS = ("fail_on", "report_level", "disable", "ignore_layers", "rules")
_RULE_KEYS = ("severity", "enabled")


@dataclass(frozen=True)
class Policy:
    """Effective settings; every lookup falls back to the rule registry's defaults."""

    fail_on: str = "error"
    report_level: str = "info"
    disabled: tuple[str, ...] = ()
    ignore_layers: tuple[str, ...] = ()
    severities: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    source: str | None = None  # file the policy came from, None for defaults only

    def enabled(self, rule_id: str) -> bool:
        return rule_id not in self.disabled

    def severity(self, rule_id: str) -> str:
        return self.severities.get(rule_id, RULES_BY_ID[rule_id].severity)

    def params(self, rule_id: str) -> dict[str, float]:
        merged = dict(RULES_BY_ID[rule_id].params)
        merged.update(self.overrides.get(rule_id, {}))
        return merged

    def settings(self) -> dict[str, Any]:
        """The effective policy, every rule spelled out, in a stable order (what the hash covers)."""
        return {
            "fail_on": self.fail_on,
            "report_level": self.report_level,
            "ignore_layers": list(self.ignore_layers),
            "rules": {
                rule.id: {
                    "enabled": self.enabled(rule.id),
                    "severity": self.severity(rule.id),
                    "params": {k: float(v) for k, v in sorted(self.params(rule.id).items())},
                }
                for rule in RULES
            },
        }

    def alpha_band(self) -> tuple[float, float]:
        """The alpha band this policy judges by (findings.alpha_band)."""
        return alpha_band(self.settings())

    def sha256(self) -> str:
        """Hash of the effective settings: two runs with the same hash judged by the same rules."""
        canonical = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The block echoed in the JSON `options`: source file name, hash, then the settings."""
        return {"source": os.path.basename(self.source) if self.source else None,
                "sha256": self.sha256(), **self.settings()}


def _norm(key: str) -> str:
    return key.replace("-", "_")


def find_policy_file(start: str) -> str | None:
    """Nearest `wwaudit.toml`, or pyproject.toml with a [tool.wwaudit] table, from `start` upwards."""
    folder = os.path.abspath(start)
    while True:
        candidate = os.path.join(folder, POLICY_FILE)
        if os.path.isfile(candidate):
            return candidate
        pyproject = os.path.join(folder, PYPROJECT)
        tool = _read_toml(pyproject).get("tool") if os.path.isfile(pyproject) else None
        if isinstance(tool, dict) and "wwaudit" in tool:
            return pyproject
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"policy {path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"policy {path}: cannot read: {exc.strerror}") from None


def _level(value: Any, allowed: tuple[str, ...], what: str, where: str) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise UsageError(f"policy {where}: {what} must be one of {'|'.join(allowed)}, not {value!r}")
    return value.lower()


def _strings(value: Any, what: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"policy {where}: {what} must be a list of strings")
    return value


def parse_policy(table: Mapping[str, Any], where: str) -> Policy:
    """Validate a policy table (the TOML's top level, or [tool.wwaudit]); `where` names it in errors."""
    table = {_norm(k): v for k, v in table.items()}
    unknown = sorted(set(table) - set(_TOP_KEYS))
    if unknown:
        raise UsageError(f"policy {where}: unknown key {unknown[0]!r} (known: {', '.join(k.replace('_', '-') for k in _TOP_KEYS)})")
    fail_on = _level(table.get("fail_on", "error"), FAIL_ON_LEVELS, "fail-on", where)
    report_level = _level(table.get("report_level", "info"), SEVERITIES, "report-level", where)
    disabled = set()
    for rule_id in _strings(table.get("disable", []), "disable", where):
        disabled.add(_rule_id(rule_id, where))
    patterns = _strings(table.get("ignore_layers", []), "ignore-layers", where)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"policy {where}: ignore-layers: invalid regular expression {pattern!r}: {exc}") from None
    rules = table.get("rules", {})
    if not isinstance(rules, dict):
        raise UsageError(f"policy {where}: rules must be a table of [rules.WWnnn] tables")
    severities: dict[str, str] = {}
    overrides: dict[str, dict[str, float]] = {}
    for raw_id, settings in sorted(rules.items()):
        rule_id = _rule_id(raw_id, where)
        if not isinstance(settings, dict):
            raise UsageError(f"policy {where}: rules.{raw_id} must be a table")
        rule = RULES_BY_ID[rule_id]
        for raw_key, value in settings.items():
            key = _norm(raw_key)
            if key == "severity":
                severities[rule_id] = _level(value, SEVERITIES, f"rules.{rule_id}.severity", where)
            elif key == "enabled":
                if not isinstance(value, bool):
                    raise UsageError(f"policy {where}: rules.{rule_id}.enabled must be true or false")
                if not value:
                    disabled.add(rule_id)
                else:
                    disabled.discard(rule_id)
            elif key in rule.params:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UsageError(f"policy {where}: rules.{rule_id}.{raw_key} must be a number, not {value!r}")
                overrides.setdefault(rule_id, {})[key] = float(value)
            else:
                known = ", ".join(list(_RULE_KEYS) + sorted(rule.params)) or "severity, enabled"
                raise UsageError(f"policy {where}: rules.{rule_id}: unknown setting {raw_key!r} (known: {known})")
    return Policy(fail_on=fail_on, report_level=report_level, disabled=tuple(sorted(disabled)),
                  ignore_layers=tuple(patterns), severities=severities, overrides=overrides)


def _rule_id(value: Any, where: str) -> str:
    rule_id = str(value).upper()
    if rule_id not in RULES_BY_ID:
        raise UsageError(f"policy {where}: unknown rule {value!r} (see `wwaudit rules`)")
    return rule_id


def load_policy(path: str | None = None, start: str | None = None, fail_on: str | None = None) -> Policy:
    """The effective policy: `path` (or the discovered file), then the CLI's `fail_on` on top."""
    if path is not None and not os.path.isfile(path):
        raise UsageError(f"--policy {path}: no such file")
    source = path if path is not None else find_policy_file(start or os.getcwd())
    policy = Policy()
    if source is not None:
        data = _read_toml(source)
        if os.path.basename(source) == PYPROJECT:
            tool = data.get("tool")
            data = tool.get("wwaudit") if isinstance(tool, dict) else None
            if not isinstance(data, dict):
                raise UsageError(f"policy {source}: no [tool.wwaudit] table")
        policy = parse_policy(data, source)
        policy = replace(policy, source=source)
    if fail_on is not None:
        policy = replace(policy, fail_on=_level(fail_on, FAIL_ON_LEVELS, "--fail-on", "(command line)"))
    return policy
