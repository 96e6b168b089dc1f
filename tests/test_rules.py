"""Rule registry: each rule fires on a purpose-built case and stays quiet on a clean one.

Unit tests set metrics by hand on LayerResult objects (the rules read metrics, never spectra);
end-to-end tests audit small ONNX models whose weights were built to trigger one rule each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gating_models import clean_weights, save_model, trigger_weights
from wwaudit.rules import findings, judge
from wwaudit.engine.core import audit
from wwaudit.options import AuditOptions
from wwaudit.rules.phases import PHASES, assign_phases, classify
from wwaudit.records import LayerResult
from wwaudit.cli.main import main

CLEAN = {"alpha": 3.2, "D": 0.04, "num_traps": 0, "rank_loss": 0, "matrix_rank": 64, "num_evals": 64,
         "lambda_max": 10.0, "log_spectral_norm": 1.0, "alpha_weighted": 3.2}


def _layer(i: int, status: str = "ok", reason: str | None = None, problem: str | None = None,
           **metrics: object) -> LayerResult:
    layer = LayerResult(id=i, name=f"layer{i}", op="MatMul", tensor=f"w{i}", kind="dense", N=128, M=64, slices=1,
                        status=status, reason=reason, problem=problem)
    layer.metrics.update({**CLEAN, **metrics})
    return layer


def _rules(layers: list[LayerResult], problems: tuple[str, ...] = ()) -> list[tuple[str, str | None]]:
    return [(f.rule, f.layer) for f in judge.evaluate(layers, problems)]


# (rule, metrics or status that trigger it); each case is one layer next to clean layers.
TRIGGERS = [
    ("WW001", dict(alpha=1.6)),
    ("WW002", dict(alpha=7.5)),
    ("WW003", dict(rank_loss=5, matrix_rank=59)),
    ("WW004", dict(num_traps=2)),
    ("WW005", dict(D=0.3)),
    ("WW005", dict(status="fit_failed", alpha=None, reason="too few tail eigenvalues")),
    ("WW006", dict(status="error", reason="weights contain 3 NaN/Inf values", problem="nonfinite")),
    ("WW007", dict(status="error", reason="all weights are zero (dead layer)", problem="zero")),
    ("WW007", dict(rank_loss=63, matrix_rank=1, alpha=None, status="fit_failed")),
    ("WW008", dict(log_spectral_norm=6.0)),
    ("WW010", dict(status="error", reason="bytes 0..4096 lie beyond the end of 'w.bin'", problem="unreadable")),
    ("WW010", dict(status="error", reason="analysis failed: LinAlgError", problem="internal")),
]


@pytest.mark.parametrize("rule,case", TRIGGERS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(TRIGGERS)])
def test_layer_rule_triggers_on_its_case_only(rule: str, case: dict) -> None:
    case = dict(case)
    status, reason, problem = case.pop("status", "ok"), case.pop("reason", None), case.pop("problem", None)
    # spread the clean layers' norms so the robust z-score has a non-zero MAD
    layers = [_layer(i, log_spectral_norm=1.0 + 0.05 * i) for i in range(6)]
    layers.append(_layer(6, status, reason, problem, **case))
    found = _rules(layers)
    assert (rule, "layer6") in found
    assert all(layer == "layer6" for _, layer in found), found
    # the same rule stays silent on the clean layers alone
    assert _rules(layers[:6]) == []


def test_degenerate_layer_is_reported_once_as_dead() -> None:
    layers = [_layer(0, "fit_failed", rank_loss=63, matrix_rank=1, alpha=None, num_traps=1)]
    assert _rules(layers) == [("WW007", "layer0")]


def test_conv_layer_rank_one_per_slice_is_dead_but_full_rank_conv_is_not() -> None:
    conv = _layer(0, num_evals=9 * 16, matrix_rank=9, rank_loss=9 * 15)
    conv.slices = 9
    healthy = _layer(1, num_evals=9 * 16, matrix_rank=9 * 16, rank_loss=0)
    healthy.slices = 9
    assert _rules([conv, healthy]) == [("WW007", "layer0")]


def test_spectral_outlier_needs_enough_layers_and_spread() -> None:
    few = [_layer(i, log_spectral_norm=1.0 + 0.05 * i) for i in range(3)] + [_layer(3, log_spectral_norm=9.0)]
    assert _rules(few) == []  # min_layers = 5
    flat = [_layer(i, log_spectral_norm=1.0) for i in range(6)]
    assert _rules(flat) == []  # MAD 0: no scale to judge by
    low = [_layer(i, log_spectral_norm=1.0 + 0.05 * i) for i in range(6)] + [_layer(6, log_spectral_norm=-4.0)]
    hits = [f for f in judge.evaluate(low) if f.rule == "WW008"]
    assert [f.layer for f in hits] == ["layer6"] and "below" in hits[0].message


def test_model_level_rules_have_no_layer() -> None:
    layers = [_layer(i, alpha_weighted=12.0) for i in range(3)]
    found = judge.evaluate(layers, ("dangling input 'x' of node 'n'",))
    model = [(f.rule, f.layer, f.layer_id) for f in found if f.rule in ("WW000", "WW009")]
    assert model == [("WW000", None, None), ("WW009", None, None)]
    assert judge.evaluate([_layer(i) for i in range(3)]) == []
    assert judge.evaluate([_layer(i, alpha_weighted=-0.5) for i in range(3)])[0].rule == "WW009"


def test_verdict_follows_fail_on() -> None:
    found = judge.evaluate([_layer(0, alpha=1.5), _layer(1, D=0.5)])  # one warning, one info
    assert judge.verdict(found, "error")[0] == "review"
    assert judge.verdict(found, "warning")[0] == "fail"
    assert judge.verdict(found, "never")[0] == "review"
    info_only = [f for f in found if f.severity == "info"]
    assert judge.verdict(info_only, "error")[0] == "pass"
    assert judge.verdict(info_only, "info")[0] == "fail"


def test_registry_is_complete_and_described() -> None:
    ids = [rule.id for rule in findings.RULES]
    assert ids[:11] == [f"WW{i:03d}" for i in range(11)] and len(set(ids)) == len(ids)
    assert ids[-5:] == [f"WW{i:03d}" for i in range(20, 25)]  # the integrity rules close the registry
    for rule in findings.RULES:
        assert rule.severity in findings.SEVERITIES and rule.scope in ("layer", "model")
        assert rule.rationale and rule.remedy and rule.title
        assert set(rule.param_help) == set(rule.params)


def test_rules_command_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 0
    text = capsys.readouterr().out
    assert all(f"WW{i:03d}" in text for i in range(11)) and "alpha_min = 2" in text
    assert main(["rules", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r for r in doc}
    assert by_id["WW002"]["params"] == {"alpha_max": 6.0, "max_D": 0.15}
    assert by_id["WW009"]["scope"] == "model" and by_id["WW006"]["severity"] == "error"
    assert main(["rules", "--format", "yaml"]) == 2


@pytest.mark.parametrize("metrics,phase", [
    (dict(rank_loss=40), "rank-collapse"),
    (dict(alpha=3.0, num_spikes=5, bulk_max=5.0), "heavy-tailed"),
    (dict(alpha=9.0, num_spikes=0, bulk_max=12.0), "random-like"),
    (dict(alpha=7.0, num_spikes=2, bulk_max=7.0), "bleeding-out"),
    (dict(alpha=8.0, num_spikes=2, bulk_max=2.0), "bulk+spikes"),
    (dict(alpha=5.0, num_spikes=3, bulk_max=2.0), "bulk-decay"),
    (dict(alpha=8.0, num_spikes=20, bulk_max=2.0), "bulk-decay"),
])
def test_phase_decision_list(metrics: dict, phase: str) -> None:
    assert classify({**CLEAN, **metrics}) == phase
    assert phase in PHASES


def test_phase_needs_mp_metrics_unless_collapsed_or_heavy_tailed() -> None:
    assert classify({**CLEAN, "alpha": 5.0}) is None  # no num_spikes: MP fit not run
    assert classify({**CLEAN, "alpha": 3.0}) == "heavy-tailed"
    assert classify({**CLEAN, "alpha": 1.5}, status="fit_failed") is None
    errored = _layer(0, "error", "weights contain 1 NaN/Inf values", alpha=3.0)
    assign_phases([errored])
    assert "phase" not in errored.metrics


@pytest.fixture(scope="module")
def triggered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Audit the trigger model once: rules found per layer name."""
    model = save_model(tmp_path_factory.mktemp("rules") / "triggers.onnx", trigger_weights())
    result = audit(str(model), AuditOptions(workers=1))
    per_layer: dict[str, set[str]] = {layer.name: set() for layer in result.layers}
    for f in result.findings:
        per_layer.setdefault(f.layer or "(model)", set()).add(f.rule)
    per_layer["_phases"] = {f"{layer.name}={layer.metrics.get('phase')}" for layer in result.layers}
    return per_layer


@pytest.mark.parametrize("layer,rule", [
    ("nan_w", "WW006"), ("inf_w", "WW006"), ("zero_w", "WW007"), ("const_w", "WW007"),
    ("thin_product", "WW003"), ("steep_tail_w", "WW002"), ("overfit_w", "WW001"), ("trapped_w", "WW004"),
])
def test_end_to_end_trigger(triggered: dict[str, set[str]], layer: str, rule: str) -> None:
    assert rule in triggered[layer], triggered[layer]


def test_end_to_end_clean_layer_and_phases(triggered: dict[str, set[str]]) -> None:
    assert triggered["clean"] == set()
    assert "random_w=random-like" in triggered["_phases"]
    assert "thin_product=rank-collapse" in triggered["_phases"]
    assert "clean=heavy-tailed" in triggered["_phases"]


def test_end_to_end_spectral_outlier_and_clean_model(tmp_path: Path) -> None:
    weights = clean_weights(6)
    clean = audit(str(save_model(tmp_path / "clean.onnx", weights)), AuditOptions(workers=1))
    assert clean.findings == [] and clean.verdict == "pass"
    weights["loud"] = weights["dense0"] * 1000.0
    loud = audit(str(save_model(tmp_path / "loud.onnx", weights)), AuditOptions(workers=1))
    assert [(f.rule, f.layer) for f in loud.findings] == [("WW008", "loud")]


def test_alpha_rules_ignore_a_poor_fit_and_leave_it_to_ww005() -> None:
    """A 10-eigenvalue head with D = 0.29 is not called over-trained (weightwatcher would): only WW005."""
    layers = [_layer(i, log_spectral_norm=1.0 + 0.05 * i) for i in range(6)]
    layers.append(_layer(6, alpha=1.4, D=0.29))
    layers.append(_layer(7, alpha=9.0, D=0.2))
    found = _rules(layers)
    assert ("WW005", "layer6") in found and ("WW005", "layer7") in found
    assert not [r for r, name in found if r in ("WW001", "WW002")]


def test_error_rules_key_on_the_problem_not_the_wording() -> None:
    """A reason text that happens to contain 'nan', 'inf' or 'zero' (a tensor named 'informer') triggers nothing."""
    layers = [_layer(i, log_spectral_norm=1.0 + 0.05 * i) for i in range(6)]
    layers.append(_layer(6, "error", "tensor 'informer_zero' cannot be decoded", "unreadable"))
    found = _rules(layers)
    assert ("WW010", "layer6") in found
    assert not [r for r, name in found if r in ("WW006", "WW007")]
