"""JUnit XML for CI systems that show test results: one test case per layer, failures = findings.

Each layer that was analysed (or that failed analysis: NaN, dead) is a test case; skipped
tensors (biases, norm scales, too small) are not tests. One more case, `model`, carries the
model-level findings (graph problems, alpha-hat). A case fails when it has a finding at or above
the policy's fail-on level; findings below it go to the case's system-out. No timestamps or
durations, so the same audit gives the same bytes.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from wwaudit.rules.findings import SEVERITY_RANK
from wwaudit.records import AuditResult, Finding


# Characters XML 1.0 cannot carry at all (vendor names are untrusted): replaced, not escaped.
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _fails(f: Finding, fail_on: str) -> bool:
    return fail_on != "never" and SEVERITY_RANK[f.severity] >= SEVERITY_RANK[fail_on]


def _case(suite: ET.Element, classname: str, name: str, findings: list[Finding], fail_on: str) -> bool:
    case = ET.SubElement(suite, "testcase", {"classname": _x(classname), "name": _x(name)})
    failing = [f for f in findings if _fails(f, fail_on)]
    if failing:
        first = failing[0]
        failure = ET.SubElement(case, "failure", {"type": first.rule, "message": _x(f"{first.rule}: {first.message}")})
        failure.text = _x("\n".join(f"{f.rule} [{f.severity}] {f.message}" for f in failing))
    others = [f for f in findings if not _fails(f, fail_on)]
    if others:
        ET.SubElement(case, "system-out").text = _x("\n".join(f"{f.rule} [{f.severity}] {f.message}" for f in others))
    return bool(failing)


def _coverage_case(suite: ET.Element, classname: str, result: AuditResult) -> bool:
    """A `coverage` case that fails when the audit is inconclusive: 0 failures must not mean 0 checked."""
    case = ET.SubElement(suite, "testcase", {"classname": _x(classname), "name": "coverage"})
    s = result.summary
    text = f"{s.get('weights_analysed', 0)} of {s.get('weights', 0)} weights analysed (coverage {s.get('coverage')})"
    if result.verdict == "inconclusive":
        reasons = "; ".join(result.verdict_reasons)
        ET.SubElement(case, "failure", {"type": "inconclusive", "message": _x(f"inconclusive: {reasons}")}).text = _x(text)
        return True
    ET.SubElement(case, "system-out").text = _x(text)
    return False


def render(result: AuditResult, ctx: Any = None) -> bytes:
    """One <testsuite> for the model inside <testsuites>."""
    policy = result.options.get("policy") or {}
    fail_on = policy.get("fail_on", "error")
    classname = "wwaudit." + result.model.path
    by_layer: dict[int | None, list[Finding]] = {}
    for f in result.findings:
        by_layer.setdefault(f.layer_id, []).append(f)

    suite = ET.Element("testsuite", {"name": _x(f"wwaudit {result.model.path}")})
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("verdict", result.verdict),
        ("model.sha256", result.model.sha256),
        ("fail-on", fail_on),
        ("policy.sha256", policy.get("sha256") or ""),
        ("suppressed", str(len(result.suppressed))),
    ):
        ET.SubElement(props, "property", {"name": key, "value": value})
    tests = failures = 0
    for layer in result.layers:
        if layer.status == "skipped":
            continue
        name = layer.name if layer.name == layer.tensor else f"{layer.name} ({layer.tensor})"
        failures += _case(suite, classname, name, by_layer.get(layer.id, []), fail_on)
        tests += 1
    failures += _case(suite, classname, "model", by_layer.get(None, []), fail_on)
    tests += 1
    failures += _coverage_case(suite, classname, result)
    tests += 1
    counts = {"tests": str(tests), "failures": str(failures), "errors": "0", "skipped": "0"}
    suite.attrib.update(counts)
    root = ET.Element("testsuites", {"name": "wwaudit", **counts})
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
