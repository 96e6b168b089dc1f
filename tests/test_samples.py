"""The bundled samples are real trained models whose audits differ for the reasons they were built.

good: full rank, hidden-layer alpha in the well-trained band; under-trained: near-random weights
(high alpha, high stable rank); collapsed: dead units whose weights decayed to exactly zero
(rank loss); CNN: conv layers pooled per kernel position, BatchNorm folding noted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wwaudit.engine.core import audit
from wwaudit.records import AuditResult, LayerResult

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MLP_SHAPES = {"fc1.weight": (256, 64), "fc2.weight": (256, 256), "fc3.weight": (256, 256), "out.weight": (256, 10)}
HIDDEN = ("fc2.weight", "fc3.weight")


@pytest.fixture(scope="module")
def audits() -> dict[str, AuditResult]:
    return {p.stem: audit(str(p)) for p in sorted(SAMPLES.glob("*.onnx"))}


def _layers(result: AuditResult) -> dict[str, LayerResult]:
    return {layer.tensor: layer for layer in result.layers if layer.status != "skipped"}


def test_samples_exist_and_are_small() -> None:
    names = {p.name for p in SAMPLES.glob("*.onnx")}
    assert names == {
        "digits_mlp_good.onnx",
        "digits_mlp_undertrained.onnx",
        "digits_mlp_collapsed.onnx",
        "digits_cnn_good.onnx",
    }
    for name in names:
        assert (SAMPLES / name).stat().st_size < 2 * 1024 * 1024


@pytest.mark.parametrize("name", ["digits_mlp_good", "digits_mlp_undertrained", "digits_mlp_collapsed"])
def test_mlp_layers_are_the_four_linear_weights(audits: dict[str, AuditResult], name: str) -> None:
    layers = _layers(audits[name])
    assert {t: (layer.N, layer.M) for t, layer in layers.items()} == MLP_SHAPES
    assert all(layer.op == "Gemm" and layer.kind == "dense" and layer.slices == 1 for layer in layers.values())
    skipped = {layer.tensor: layer.reason for layer in audits[name].layers if layer.status == "skipped"}
    assert set(skipped) == {"fc1.bias", "fc2.bias", "fc3.bias", "out.bias"}
    assert all(reason.startswith("1-D") for reason in skipped.values())


def test_collapsed_sample_loses_rank_and_good_one_does_not(audits: dict[str, AuditResult]) -> None:
    good, collapsed = _layers(audits["digits_mlp_good"]), _layers(audits["digits_mlp_collapsed"])
    assert all(layer.metric("rank_loss") == 0 for layer in good.values())
    for tensor in HIDDEN:
        # most of the 256 hidden units died: their rows/columns are exactly zero
        assert collapsed[tensor].metric("rank_loss") > 64
        assert collapsed[tensor].metric("matrix_rank") < good[tensor].metric("matrix_rank")
    assert any(f.rule == "WW003" for f in audits["digits_mlp_collapsed"].findings)
    assert not any(f.rule == "WW003" for f in audits["digits_mlp_good"].findings)


def test_undertrained_sample_looks_random(audits: dict[str, AuditResult]) -> None:
    good, under = _layers(audits["digits_mlp_good"]), _layers(audits["digits_mlp_undertrained"])
    for tensor in HIDDEN:
        # near-random weights spread their energy over many directions ...
        assert under[tensor].metric("stable_rank") > 2 * good[tensor].metric("stable_rank")
        # ... and training has grown the norm of the good one
        assert good[tensor].metric("log_norm") > under[tensor].metric("log_norm")


def test_alpha_separates_good_from_undertrained(audits: dict[str, AuditResult]) -> None:
    good, under = _layers(audits["digits_mlp_good"]), _layers(audits["digits_mlp_undertrained"])
    for tensor in ("fc1.weight",) + HIDDEN:
        assert 2.0 <= good[tensor].metric("alpha") <= 6.0
        assert under[tensor].metric("alpha") > good[tensor].metric("alpha") + 2.0


def test_cnn_sample_pools_kernel_positions_and_notes_batchnorm(audits: dict[str, AuditResult]) -> None:
    layers = _layers(audits["digits_cnn_good"])
    assert {t: (layer.op, layer.N, layer.M, layer.slices) for t, layer in layers.items()} == {
        "conv1.weight": ("Conv", 32, 1, 9),
        "conv2.weight": ("Conv", 64, 32, 9),
        "fc1.weight": ("Gemm", 1024, 128, 1),
        "out.weight": ("Gemm", 128, 10, 1),
    }
    assert any("BatchNorm folded" in note for note in layers["conv1.weight"].notes)
    assert not any("BatchNorm" in note for note in layers["conv2.weight"].notes)
    assert all(layer.metric("rank_loss") == 0 for layer in layers.values())


@pytest.mark.slow
def test_make_samples_is_deterministic(tmp_path: Path) -> None:
    """Rebuilding the (quick) under-trained sample gives the committed file byte for byte."""
    proc = subprocess.run(
        [sys.executable, str(SAMPLES / "make_samples.py"), "--out", str(tmp_path), "--only", "digits_mlp_undertrained"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "digits_mlp_undertrained.onnx" in proc.stdout
    rebuilt = (tmp_path / "digits_mlp_undertrained.onnx").read_bytes()
    assert rebuilt == (SAMPLES / "digits_mlp_undertrained.onnx").read_bytes()
