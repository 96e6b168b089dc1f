"""The one list of per-layer metrics (wwaudit/layer_metrics.py) and what derives from it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from gating_models import power_law_matrix, save_model
from wwaudit import layer_metrics as lm
from wwaudit.engine.core import audit
from wwaudit.formats.csv_format import render as render_csv
from wwaudit.formats.report.document import DETAIL_METRICS, METRIC_TABLE, build_document
from wwaudit.formats import RenderContext
from wwaudit.options import AuditOptions
from wwaudit.rules.findings import ALPHA_BAND, alpha_band
from wwaudit.rules.policy import Policy

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_the_list_is_well_formed() -> None:
    names = [m.name for m in lm.METRICS]
    assert len(names) == len(set(names)) == len(lm.METRIC_COLUMNS) + len(lm.OPTIONAL_COLUMNS)
    # opt-in metrics: each names the AuditOptions field that turns it on, and none is in a list
    # that every audit writes (table, terminal, deltas, summary means)
    fields = set(AuditOptions.__dataclass_fields__)
    for m in lm.METRICS:
        assert (m.name in lm.OPTIONAL_COLUMNS) == bool(m.option) and (not m.option or m.option in fields), m.name
        assert not (m.option and (m.table or m.terminal or m.delta or m.mean_over or m.model_label)), m.name
    assert all(m.kind in lm.KINDS and m.label and m.description for m in lm.METRICS)
    assert all(m.mean_over in ("", "fitted", "analysed") for m in lm.METRICS)
    details = [m.detail for m in lm.METRICS if m.detail]
    assert sorted(details) == list(range(1, len(details) + 1))  # positions 1..n, no gap, no tie
    # the derived lists keep the list's order and name only listed metrics
    for derived in (lm.MP_METRICS, lm.DELTA_METRICS, tuple(m.name for m in lm.TABLE_METRICS)):
        assert list(derived) == [n for n in names if n in derived]
    assert lm.names(group="mp") == lm.MP_METRICS == ("num_spikes", "sigma_mp", "mp_softrank", "bulk_min", "bulk_max")


@pytest.fixture(scope="module")
def sample_result():
    return audit(str(SAMPLES / "digits_cnn_good.onnx"), AuditOptions(workers=1))


def test_the_analysis_sets_exactly_the_listed_metrics_with_their_kinds(sample_result) -> None:
    analysed = [layer for layer in sample_result.layers if layer.status == "ok"]
    assert analysed
    kinds = {"count": (int, np.integer), "real": (float, np.floating), "text": (str,)}
    for layer in analysed:
        assert set(layer.metrics) == set(lm.METRIC_COLUMNS), layer.name
        for name, value in layer.metrics.items():
            if value is not None:
                assert isinstance(value, kinds[lm.METRICS_BY_NAME[name].kind]) and not isinstance(value, bool), (name, value)


def test_every_output_column_list_follows_the_list(sample_result) -> None:
    header = next(csv.reader(io.StringIO(render_csv(sample_result).decode())))
    assert header[-len(lm.METRIC_COLUMNS) :] == list(lm.METRIC_COLUMNS)
    assert list(sample_result.layers[0].to_dict())[-len(lm.METRIC_COLUMNS) :] == list(lm.METRIC_COLUMNS)
    assert [k for k, _label, _tip in METRIC_TABLE] == [m.name for m in lm.TABLE_METRICS]
    assert [k for k, _label in DETAIL_METRICS][:3] == ["alpha", "alpha_ci_low", "alpha_ci_high"]
    means = [k for k in sample_result.summary if k.endswith("_mean")]
    assert means == [f"{m.name}_mean" for m in lm.MEAN_METRICS]


def test_the_policy_band_reaches_the_summary_and_the_report(tmp_path: Path) -> None:
    # three layers with alpha near 1.7, 3 and 3.5: [2, 6] holds two of them, [1.5, 4] all three
    weights = {f"w{i}": power_law_matrix(128, 64, a, seed=i) for i, a in enumerate((1.7, 3.0, 3.5))}
    model = str(save_model(tmp_path / "band.onnx", weights))
    default = audit(model, AuditOptions(workers=1, fast=True))
    moved = Policy(overrides={"WW001": {"alpha_min": 1.5}, "WW002": {"alpha_max": 4.0}})
    assert moved.alpha_band() == (1.5, 4.0) and Policy().alpha_band() == ALPHA_BAND
    result = audit(model, AuditOptions(workers=1, fast=True), policy=moved)
    alphas = [layer.metric("alpha") for layer in result.layers if layer.status == "ok"]
    assert len(alphas) == 3
    expected = sum(1.5 <= a <= 4.0 for a in alphas) / 3
    assert result.summary["share_alpha_in_band"] == pytest.approx(expected)
    assert expected == 1.0 and default.summary["share_alpha_in_band"] == pytest.approx(2 / 3)  # the band moved it
    assert alpha_band(result.options["policy"]) == (1.5, 4.0)
    doc = build_document(result, RenderContext(plots="none"))
    assert doc["alpha_band"]["text"] == "[1.5, 4]"
    assert "Share of layers with α in [1.5, 4]" in [row[0] for row in doc["summary"]]
    alpha_tip = next(tip for key, _label, _numeric, tip, _width in doc["columns"] if key == "alpha")
    assert "[1.5, 4] is typical" in alpha_tip and "[2, 6]" not in alpha_tip
