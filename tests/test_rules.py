"""Rule registry: each rule fires on a purpose-built case and stays quiet on a clean one.

Unit tests set metrics by hand on LayerResult objects (the rules read metrics, never spectra);
end-to-end tests audit small ONNX models whose weights were built to trigger one rule each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gating_models import clean_weights, save_model, trigger_weights
from wwaudit.rules import findings, judge
from wwaudit.engine.core import audit
from wwaudit.options import AuditOptions
from wwaudit.rules.phases import PHASES, assign_phases, classify
from wwaudit.records import LayerResult
from wwaudit.cli.main import main

CLEAN = {
    "alpha": 3.2,
    "alpha_ci_low": 2.8,
    "alpha_ci_high": 3.6,
    "D": 0.04,
    "num_traps": 0,
    "rank_loss": 0,
    "matrix_rank": 64,
    "num_evals": 64,
    "lambda_max": 10.0,
    "log_spectral_norm": 1.0,
    "alpha_weighted": 3.2,
    "rand_lambda_ratio": 3.0,
    "num_rand_spikes": 12,
    "log_gain": 0.12,
    "dup_rows": 0,
    "dup_cols": 0,
}


def _layer(i: int, status: str = "ok", reason: str | None = None, problem: str | None = None, **metrics: object) -> LayerResult:
    layer = LayerResult(
        id=i,
        name=f"layer{i}",
        op="MatMul",
        tensor=f"w{i}",
        kind="dense",
        N=128,
        M=64,
        slices=1,
        shape=[64, 128],
        status=status,
        reason=reason,
        problem=problem,
    )
    layer.metrics.update({**CLEAN, **metrics})
    return layer


def _clean(count: int = 6) -> list[LayerResult]:
    """Healthy siblings with a little spread in gain and structure (robust z needs a non-zero MAD)."""
    return [_layer(i, log_gain=0.12 + 0.05 * i, rand_lambda_ratio=3.0 + 0.2 * i) for i in range(count)]


def _rules(layers: list[LayerResult], problems: tuple[str, ...] = ()) -> list[tuple[str, str | None]]:
    return [(f.rule, f.layer) for f in judge.evaluate(layers, problems)]


# (rule, metrics or status that trigger it); each case is one layer next to clean layers.
TRIGGERS = [
    ("WW001", dict(alpha=1.6, alpha_ci_low=1.4, alpha_ci_high=1.8)),
    ("WW002", dict(alpha=7.5, alpha_ci_low=6.4, alpha_ci_high=8.9)),
    ("WW003", dict(rank_loss=20, matrix_rank=44)),
    ("WW004", dict(num_traps=2)),
    ("WW005", dict(D=0.3)),
    ("WW005", dict(status="fit_failed", alpha=None, reason="too few tail eigenvalues")),
    ("WW006", dict(status="error", reason="weights contain 3 NaN/Inf values", problem="nonfinite")),
    ("WW007", dict(status="error", reason="all weights are zero (dead layer)", problem="zero")),
    ("WW007", dict(rank_loss=63, matrix_rank=1, alpha=None, status="fit_failed")),
    ("WW008", dict(log_gain=2.95)),
    ("WW010", dict(status="error", reason="bytes 0..4096 lie beyond the end of 'w.bin'", problem="unreadable")),
    ("WW010", dict(status="error", reason="analysis failed: LinAlgError", problem="internal")),
    ("WW011", dict(rand_lambda_ratio=1.01, num_rand_spikes=0, alpha=7.0, alpha_ci_low=5.0, alpha_ci_high=9.0)),
    ("WW013", dict(dup_rows=32)),
]


@pytest.mark.parametrize("rule,case", TRIGGERS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(TRIGGERS)])
def test_layer_rule_triggers_on_its_case_only(rule: str, case: dict) -> None:
    case = dict(case)
    status, reason, problem = case.pop("status", "ok"), case.pop("reason", None), case.pop("problem", None)
    layers = _clean()
    layers.append(_layer(6, status, reason, problem, **case))
    found = _rules(layers)
    assert (rule, "layer6") in found
    assert all(layer == "layer6" for _, layer in found), found
    # the same rule stays silent on the clean layers alone
    assert _rules(layers[:6]) == []


def test_degenerate_layer_is_reported_once_as_dead() -> None:
    layers = [_layer(0, "fit_failed", rank_loss=63, matrix_rank=1, alpha=None, num_traps=1, dup_rows=40)]
    assert _rules(layers) == [("WW007", "layer0")]


def test_conv_layer_rank_one_per_slice_is_dead_but_full_rank_conv_is_not() -> None:
    conv = _layer(0, num_evals=9 * 16, matrix_rank=9, rank_loss=9 * 15)
    conv.slices = 9
    healthy = _layer(1, num_evals=9 * 16, matrix_rank=9 * 16, rank_loss=0)
    healthy.slices = 9
    assert _rules([conv, healthy]) == [("WW007", "layer0")]


def test_rank_loss_of_one_value_or_a_small_share_is_not_collapse() -> None:
    """Dead units and rounding: one zero singular value, or 12% of them (an intact OCR layer), stay quiet."""
    assert _rules(_clean() + [_layer(6, rank_loss=1, matrix_rank=63)]) == []
    assert _rules(_clean() + [_layer(6, rank_loss=8, matrix_rank=56)]) == []
    assert _rules(_clean() + [_layer(6, rank_loss=32, matrix_rank=32)]) == [("WW003", "layer6")]


def test_scale_outlier_needs_siblings_direction_limits_and_skips_the_input_layer() -> None:
    few = _clean(3) + [_layer(3, log_gain=9.0)]
    assert _rules(few) == []  # 3 siblings < min_siblings 4
    x3 = _clean() + [_layer(6, log_gain=0.95)]  # weights x3: within the intact spread, not judged
    assert _rules(x3) == []
    down = _clean() + [_layer(6, log_gain=-2.5)]  # decayed layers of intact models sit 2-3 decades down
    assert _rules(down) == []
    deep = _clean() + [_layer(6, log_gain=-4.0)]
    hits = [f for f in judge.evaluate(deep) if f.rule == "WW008"]
    assert [f.layer for f in hits] == ["layer6"] and "below" in hits[0].message and "siblings" in hits[0].message
    first = [_layer(0, log_gain=3.0)] + [_layer(i, log_gain=0.05 * i) for i in range(1, 7)]
    assert _rules(first) == []  # the layer nearest the input follows the input's units


def test_random_layer_needs_structured_siblings() -> None:
    random = dict(rand_lambda_ratio=0.99, num_rand_spikes=0)
    assert _rules(_clean() + [_layer(6, **random)]) == [("WW011", "layer6")]
    # a model where a quarter of the layers look random: one more is no evidence
    mixed = _clean() + [_layer(6 + i, **random) for i in range(3)]
    assert [r for r, _ in _rules(mixed)] == []
    # a spectrum narrower than its shuffle's is structure, not randomness; traps are not random either
    assert _rules(_clean() + [_layer(6, rand_lambda_ratio=0.74, num_rand_spikes=0)]) == []
    assert ("WW011", "layer6") not in _rules(_clean() + [_layer(6, num_traps=3, **random)])
    # too few eigenvalues per slice to judge
    small = _layer(6, **random)
    small.M = 16
    assert _rules(_clean() + [small]) == []


def test_random_layer_on_a_standard_initialiser_needs_only_half_its_siblings_structured() -> None:
    """The gain of torch's default init (log10 1/3) on a random-looking layer is evidence of its own."""
    random = dict(rand_lambda_ratio=0.99, num_rand_spikes=0)
    mixed = _clean() + [_layer(6 + i, **random, log_gain=0.15) for i in range(3)]  # 6 of 9 siblings structured
    assert _rules(mixed) == []
    on_init = mixed + [_layer(9, **random, log_gain=-0.4771)]
    found = judge.evaluate(on_init)
    assert [(f.rule, f.layer, f.severity) for f in found] == [("WW016", "layer9", "error")]
    assert "torch's default" in found[0].message
    near_miss = mixed + [_layer(9, **random, log_gain=-0.42)]  # 0.06 decades off: not the initialiser
    assert _rules(near_miss) == []


def test_model_random_throughout_is_one_model_level_error() -> None:
    layers = [_layer(i, rand_lambda_ratio=1.0 + 0.01 * i, num_rand_spikes=0) for i in range(4)]
    found = judge.evaluate(layers)
    assert [(f.rule, f.layer, f.severity) for f in found] == [("WW012", None, "error")]
    assert "4 of 4 layers" in found[0].message
    # with --fast there is no shuffled copy: the MP fit's spikes decide
    fast = [_layer(i, rand_lambda_ratio=None, num_rand_spikes=None, num_spikes=0) for i in range(3)]
    assert [f.rule for f in judge.evaluate(fast)] == ["WW012"]


def test_duplicates_need_a_count_and_a_share() -> None:
    assert _rules(_clean() + [_layer(6, dup_rows=1)]) == []
    assert _rules(_clean() + [_layer(6, dup_cols=2)]) == [("WW013", "layer6")]


def test_model_level_rules_have_no_layer() -> None:
    found = judge.evaluate([_layer(i) for i in range(3)], ("dangling input 'x' of node 'n'",))
    assert [(f.rule, f.layer, f.layer_id) for f in found] == [("WW000", None, None)]
    assert judge.evaluate([_layer(i) for i in range(3)]) == []


def test_alpha_hat_rule_is_off_by_default_and_works_when_enabled() -> None:
    from wwaudit.rules.policy import parse_policy

    layers = [_layer(i, alpha_weighted=12.0) for i in range(3)]
    assert judge.evaluate(layers) == []
    policy = parse_policy({"rules": {"WW009": {"enabled": True}}}, "test")
    assert [(f.rule, f.layer) for f in judge.evaluate(layers, policy=policy)] == [("WW009", None)]


def test_weightwatcher_preset_labels_alpha_on_the_point_estimate_as_warnings() -> None:
    from wwaudit.rules.policy import parse_policy

    layers = _clean() + [
        _layer(6, alpha=1.9, alpha_ci_low=1.6, alpha_ci_high=2.3, D=0.2),
        _layer(7, alpha=6.5, alpha_ci_low=5.1, alpha_ci_high=8.0),
    ]
    assert _rules(layers) == [("WW005", "layer6")]  # interval straddles 2 and 6; the poor fit is WW005
    preset = parse_policy({"preset": "weightwatcher"}, "test")
    found = {(f.rule, f.layer, f.severity) for f in judge.evaluate(layers, policy=preset)}
    assert {("WW001", "layer6", "warning"), ("WW002", "layer7", "warning")} <= found
    custom = parse_policy({"preset": "weightwatcher", "rules": {"WW001": {"severity": "error"}}}, "test")
    assert custom.severity("WW001") == "error" and custom.params("WW001")["use_ci"] == 0.0


def test_verdict_follows_fail_on_and_coverage() -> None:
    from wwaudit.records import Coverage

    found = judge.evaluate(_clean() + [_layer(6, rank_loss=40, matrix_rank=24), _layer(7, D=0.5)])
    assert judge.verdict(found, "error")[0] == "review"
    assert judge.verdict(found, "warning")[0] == "fail"
    assert judge.verdict(found, "never")[0] == "review"
    info_only = [f for f in found if f.severity == "info"]
    assert judge.verdict(info_only, "error")[0] == "pass"
    assert judge.verdict(info_only, "info")[0] == "fail"
    nothing = Coverage(weights=5, analysed=0, not_selected=5, weight_parameters=100)
    assert judge.verdict([], "error", nothing.incomplete_reasons())[0] == "inconclusive"
    limited = Coverage(weights=5, analysed=4, skipped_for_limit=1, weight_parameters=100, analysed_parameters=80)
    assert judge.verdict([], "error", limited.incomplete_reasons())[0] == "inconclusive"
    assert limited.incomplete_reasons(allow_incomplete=True) == []
    assert judge.verdict(found, "warning", limited.incomplete_reasons())[0] == "fail"


def test_registry_is_complete_and_described() -> None:
    ids = [rule.id for rule in findings.RULES]
    assert ids[:18] == [f"WW{i:03d}" for i in range(18)] and len(set(ids)) == len(ids)
    assert ids[18:23] == [f"WW{i:03d}" for i in range(20, 25)]  # the integrity rules, then the comparison's
    for rule in findings.RULES:
        assert rule.severity in findings.SEVERITIES and rule.scope in ("layer", "model")
        assert rule.rationale and rule.remedy and rule.title
        assert set(rule.param_help) == set(rule.params)


def test_rules_command_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 0
    text = capsys.readouterr().out
    assert all(f"WW{i:03d}" in text for i in range(18)) and "alpha_min = 2" in text
    assert main(["rules", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r for r in doc}
    assert by_id["WW002"]["params"] == {"alpha_max": 6.0, "max_D": 0.15, "use_ci": 1.0}
    assert by_id["WW009"]["scope"] == "model" and by_id["WW009"]["enabled"] is False
    assert by_id["WW016"]["severity"] == "error" and by_id["WW011"]["severity"] == "warning"
    assert by_id["WW004"]["severity"] == "info"
    assert main(["rules", "--format", "yaml"]) == 2


@pytest.mark.parametrize(
    "metrics,phase",
    [
        (dict(rank_loss=40), "rank-collapse"),
        (dict(alpha=3.0, num_spikes=5, bulk_max=5.0), "heavy-tailed"),
        (dict(alpha=9.0, num_spikes=0, bulk_max=12.0), "random-like"),
        (dict(alpha=7.0, num_spikes=2, bulk_max=7.0), "bleeding-out"),
        (dict(alpha=8.0, num_spikes=2, bulk_max=2.0), "bulk+spikes"),
        (dict(alpha=5.0, num_spikes=3, bulk_max=2.0), "bulk-decay"),
        (dict(alpha=8.0, num_spikes=20, bulk_max=2.0), "bulk-decay"),
    ],
)
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


@pytest.mark.parametrize(
    "layer,rule",
    [
        ("nan_w", "WW006"),
        ("inf_w", "WW006"),
        ("zero_w", "WW007"),
        ("const_w", "WW007"),
        ("thin_product", "WW003"),
        ("steep_tail_w", "WW002"),
        ("overfit_w", "WW001"),
        ("trapped_w", "WW004"),
    ],
)
def test_end_to_end_trigger(triggered: dict[str, set[str]], layer: str, rule: str) -> None:
    assert rule in triggered[layer], triggered[layer]


def test_end_to_end_clean_layer_and_phases(triggered: dict[str, set[str]]) -> None:
    assert triggered["clean"] == set()
    assert "random_w=random-like" in triggered["_phases"]
    assert "thin_product=rank-collapse" in triggered["_phases"]
    assert "clean=heavy-tailed" in triggered["_phases"]


def test_end_to_end_scale_outlier_random_layer_duplicates_and_clean_model(tmp_path: Path) -> None:
    weights = clean_weights(6)
    clean = audit(str(save_model(tmp_path / "clean.onnx", weights)), AuditOptions(workers=1))
    assert clean.findings == [] and clean.verdict == "pass"
    assert clean.summary["coverage"] == 1.0 and clean.summary["weights_analysed"] == 6
    loud = dict(weights, loud=weights["dense0"] * 30.0)
    found = audit(str(save_model(tmp_path / "loud.onnx", loud)), AuditOptions(workers=1))
    assert [(f.rule, f.layer) for f in found.findings] == [("WW008", "loud")]
    rng = np.random.default_rng(5)
    norm = float(np.linalg.norm(weights["dense3"]))
    reinit = rng.standard_normal(weights["dense3"].shape).astype(np.float32)
    swapped = dict(weights, dense3=reinit * (norm / float(np.linalg.norm(reinit))))
    found = audit(str(save_model(tmp_path / "reinit.onnx", swapped)), AuditOptions(workers=1))
    assert [(f.rule, f.layer) for f in found.findings if f.severity != "info"] == [("WW011", "dense3")]
    assert found.verdict == "review"
    fan_in = weights["dense3"].shape[1]  # the (out x in) matrix save_model stores transposed
    bound = 1.0 / np.sqrt(fan_in)
    torch_init = rng.uniform(-bound, bound, weights["dense3"].shape).astype(np.float32)  # torch's default init
    found = audit(str(save_model(tmp_path / "init.onnx", dict(weights, dense3=torch_init))), AuditOptions(workers=1))
    assert [(f.rule, f.layer) for f in found.findings if f.severity != "info"] == [("WW016", "dense3")]
    assert found.verdict == "fail"
    copied = weights["dense2"].copy()
    copied[:, 32:] = copied[:, :32]  # [in, out] storage: the second half of the output rows repeats the first
    found = audit(str(save_model(tmp_path / "dup.onnx", dict(weights, dense2=copied))), AuditOptions(workers=1))
    assert ("WW013", "dense2") in [(f.rule, f.layer) for f in found.findings]


def test_alpha_rules_ignore_a_poor_fit_and_leave_it_to_ww005() -> None:
    """A 10-eigenvalue head with D = 0.29 is not called over-trained (weightwatcher would): only WW005."""
    layers = _clean()
    layers.append(_layer(6, alpha=1.4, D=0.29))
    layers.append(_layer(7, alpha=9.0, D=0.2))
    found = _rules(layers)
    assert ("WW005", "layer6") in found and ("WW005", "layer7") in found
    assert not [r for r, name in found if r in ("WW001", "WW002")]


def test_error_rules_key_on_the_problem_not_the_wording() -> None:
    """A reason text that happens to contain 'nan', 'inf' or 'zero' (a tensor named 'informer') triggers nothing."""
    layers = _clean()
    layers.append(_layer(6, "error", "tensor 'informer_zero' cannot be decoded", "unreadable"))
    found = _rules(layers)
    assert ("WW010", "layer6") in found
    assert not [r for r, name in found if r in ("WW006", "WW007")]
