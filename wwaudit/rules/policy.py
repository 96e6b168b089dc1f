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
from typing import Any, Mapping, Sequence

from wwaudit.rules.findings import FAIL_ON_LEVELS, RULES, RULES_BY_ID, SEVERITIES, alpha_band
from wwaudit.errors import UsageError
from wwaudit.records import Finding

POLICY_FILE = "wwaudit.toml"
PYPROJECT = "pyproject.toml"
_TOP_KEYS = ("preset", "fail_on", "report_level", "allow_incomplete", "disable", "ignore_layers", "rules", "waivers")
_RULE_KEYS = ("severity", "enabled")
_DEFAULT_OFF = tuple(sorted(rule.id for rule in RULES if not rule.enabled))

# Named starting points a policy file can build on (`preset = "weightwatcher"`); its own settings
# then override the preset's. "weightwatcher" restores the reference's fixed labels: any alpha
# below 2 over-trained and above 6 under-trained, on the point estimate and whatever the fit.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "weightwatcher": {
        "rules": {
            "WW001": {"severity": "warning", "use_ci": 0.0, "max_D": 1.0},
            "WW002": {"severity": "warning", "use_ci": 0.0, "max_D": 1.0},
        },
    },
}
_WAIVER_KEYS = ("rule", "layer", "reason", "owner")


@dataclass(frozen=True)
class Waiver:
    """A written exception: findings of `rule` (an id or a prefix such as WW00) on layers whose name
    or tensor matches the regex `layer` (every layer, and model-level findings, when None) are
    accepted. Why reason and owner are required: a waiver is a decision somebody signs; the
    justification travels with each waived finding into the JSON, SARIF and the report."""

    rule: str
    layer: str | None
    reason: str
    owner: str

    def matches(self, finding: Finding) -> bool:
        if not finding.rule.startswith(self.rule):
            return False
        if self.layer is None:
            return True
        names = [n for n in (finding.layer, finding.tensor) if n]
        return any(re.search(self.layer, n) for n in names)

    def justification(self) -> str:
        where = f" on layers matching {self.layer!r}" if self.layer is not None else ""
        return f"waived{where} by {self.owner}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "layer": self.layer, "reason": self.reason, "owner": self.owner}


@dataclass(frozen=True)
class Policy:
    """Effective settings; every lookup falls back to the rule registry's defaults."""

    fail_on: str = "error"
    report_level: str = "info"
    disabled: tuple[str, ...] = _DEFAULT_OFF
    ignore_layers: tuple[str, ...] = ()
    severities: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    waivers: tuple[Waiver, ...] = ()
    source: str | None = None  # file the policy came from, None for defaults only
    allow_incomplete: bool = False  # weights skipped for a limit do not make the verdict inconclusive
    preset: str = "default"

    def enabled(self, rule_id: str) -> bool:
        return rule_id not in self.disabled

    def severity(self, rule_id: str) -> str:
        return self.severities.get(rule_id, RULES_BY_ID[rule_id].severity)

    def params(self, rule_id: str) -> dict[str, float]:
        merged = dict(RULES_BY_ID[rule_id].params)
        merged.update(self.overrides.get(rule_id, {}))
        return merged

    def settings(self) -> dict[str, Any]:
        """The effective policy, every rule spelled out, in a stable order (what the hash covers).
        Waivers are listed only when there are some, so a policy without any keeps its hash."""
        out: dict[str, Any] = {
            "preset": self.preset,
            "fail_on": self.fail_on,
            "report_level": self.report_level,
            "allow_incomplete": self.allow_incomplete,
            "ignore_layers": list(self.ignore_layers),
            "rules": {
                rule.id: {
                    "enabled": self.enabled(rule.id),
                    "severity": self.severity(rule.id),
                    "params": {k: float(v) for k, v in sorted(self.params(rule.id).items())},
                }
                for rule in sorted(RULES, key=lambda r: r.id)
            },
        }
        if self.waivers:
            out["waivers"] = [w.to_dict() for w in self.waivers]
        return out

    def alpha_band(self) -> tuple[float, float]:
        """The alpha band this policy judges by (findings.alpha_band)."""
        return alpha_band(self.settings())

    def sha256(self) -> str:
        """Hash of the effective settings: two runs with the same hash judged by the same rules."""
        canonical = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The block echoed in the JSON `options`: source file name, hash, then the settings."""
        return {"source": os.path.basename(self.source) if self.source else None, "sha256": self.sha256(), **self.settings()}


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
        raise UsageError(
            f"policy {where}: unknown key {unknown[0]!r} (known: {', '.join(k.replace('_', '-') for k in _TOP_KEYS)})"
        )
    preset = _level(table.get("preset", "default"), tuple(PRESETS), "preset", where)
    fail_on = _level(table.get("fail_on", "error"), FAIL_ON_LEVELS, "fail-on", where)
    report_level = _level(table.get("report_level", "info"), SEVERITIES, "report-level", where)
    allow_incomplete = table.get("allow_incomplete", False)
    if not isinstance(allow_incomplete, bool):
        raise UsageError(f"policy {where}: allow-incomplete must be true or false")
    disabled = set(_DEFAULT_OFF)
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
    merged: dict[str, Any] = {}
    for raw_id, settings in PRESETS[preset].get("rules", {}).items():
        merged[raw_id] = dict(settings)
    for raw_id, settings in rules.items():
        if isinstance(settings, dict) and raw_id.upper() in merged:
            merged[raw_id.upper()] = {**merged[raw_id.upper()], **settings}
        else:
            merged[raw_id] = settings
    for raw_id, settings in sorted(merged.items()):
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
    return Policy(
        fail_on=fail_on,
        report_level=report_level,
        disabled=tuple(sorted(disabled)),
        ignore_layers=tuple(patterns),
        severities=severities,
        overrides=overrides,
        allow_incomplete=allow_incomplete,
        preset=preset,
        waivers=_waivers(table.get("waivers", []), where),
    )


def _waivers(value: Any, where: str) -> tuple[Waiver, ...]:
    """[[waivers]] tables: rule (id or prefix) and a written reason and owner are required."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise UsageError(f"policy {where}: waivers must be an array of [[waivers]] tables")
    out = []
    for i, raw in enumerate(value, 1):
        table = {_norm(k): v for k, v in raw.items()}
        unknown = sorted(set(table) - set(_WAIVER_KEYS))
        if unknown:
            raise UsageError(f"policy {where}: waiver {i}: unknown key {unknown[0]!r} (known: {', '.join(_WAIVER_KEYS)})")
        for key in ("rule", "reason", "owner"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise UsageError(f"policy {where}: waiver {i}: {key} is required (a non-empty string)")
        layer = table.get("layer")
        if layer is not None:
            if not isinstance(layer, str):
                raise UsageError(f"policy {where}: waiver {i}: layer must be a regular expression (a string)")
            try:
                re.compile(layer)
            except re.error as exc:
                raise UsageError(f"policy {where}: waiver {i}: invalid regular expression {layer!r}: {exc}") from None
        rule = table["rule"].strip().upper()
        expand_rules([rule], f"policy {where}: waiver {i}")  # an id or a prefix that names a rule
        out.append(Waiver(rule, layer, " ".join(table["reason"].split()), " ".join(table["owner"].split())))
    return tuple(out)


def waiver_for(policy: Policy | None, finding: Finding) -> Waiver | None:
    """The first of the policy's waivers that accepts `finding`, if any (the judge's one call)."""
    if policy is None:
        return None
    return next((w for w in policy.waivers if w.matches(finding)), None)


def expand_rules(codes: Sequence[str], what: str) -> list[str]:
    """Rule ids named by codes, each an id or a prefix (ruff-style: WW0 = WW001..WW009); a code
    that names no rule is an error, as a typo would otherwise select nothing silently."""
    out: list[str] = []
    for code in codes:
        code = code.strip().upper()
        found = [rule.id for rule in RULES if code and rule.id.startswith(code)]
        if not found:
            raise UsageError(f"{what}: {code or repr('')} names no rule (see `wwaudit rules`)")
        out.extend(r for r in found if r not in out)
    return out


def apply_selection(policy: Policy, select: Sequence[str] = (), ignore: Sequence[str] = ()) -> Policy:
    """--select keeps only the named rules enabled, --ignore disables rules, as ruff's options do;
    both on top of the policy file (the command line wins)."""
    disabled = set(policy.disabled)
    if select:
        chosen = set(expand_rules(select, "--select"))
        disabled |= {rule.id for rule in RULES if rule.id not in chosen}
    disabled |= set(expand_rules(ignore, "--ignore")) if ignore else set()
    return replace(policy, disabled=tuple(sorted(disabled)))


def to_toml(policy: Policy) -> str:
    """The effective policy as a policy file (what --show-policy prints): reading it back with
    --policy judges by the same rules, so the printed hash is the one of that file too."""
    s = policy.settings()
    lines = [
        f"# effective wwaudit policy (source: {policy.source or 'defaults'})",
        f"# sha256: {policy.sha256()}",
        f"preset = {_toml(s['preset'])}",
        f"fail-on = {_toml(s['fail_on'])}",
        f"report-level = {_toml(s['report_level'])}",
        f"allow-incomplete = {_toml(s['allow_incomplete'])}",
        f"ignore-layers = {_toml(s['ignore_layers'])}",
    ]
    for rule_id, rule in s["rules"].items():
        lines += [
            "",
            f"[rules.{rule_id}]  # {RULES_BY_ID[rule_id].title}",
            f"enabled = {_toml(rule['enabled'])}",
            f"severity = {_toml(rule['severity'])}",
        ]
        lines += [f"{key.replace('_', '-')} = {_toml(value)}" for key, value in rule["params"].items()]
    for waiver in s.get("waivers", []):
        lines += ["", "[[waivers]]"] + [f"{k} = {_toml(v)}" for k, v in waiver.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """A TOML literal for the values a policy holds (strings, booleans, numbers, string lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # thresholds are finite or ±inf (no NaN in a policy)
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(value, repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _rule_id(value: Any, where: str) -> str:
    rule_id = str(value).upper()
    if rule_id not in RULES_BY_ID:
        raise UsageError(f"policy {where}: unknown rule {value!r} (see `wwaudit rules`)")
    return rule_id


def load_policy(
    path: str | None = None,
    start: str | None = None,
    fail_on: str | None = None,
    report_level: str | None = None,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    allow_incomplete: bool | None = None,
) -> Policy:
    """The effective policy: `path` (or the discovered file), then the command line on top
    (`fail_on`, `report_level`, `select`/`ignore` rule codes, `allow_incomplete`)."""
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
    if allow_incomplete:
        policy = replace(policy, allow_incomplete=True)
    if report_level is not None:
        policy = replace(policy, report_level=_level(report_level, SEVERITIES, "--report-level", "(command line)"))
    return apply_selection(policy, select, ignore) if select or ignore else policy
