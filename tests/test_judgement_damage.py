"""The judgement benchmark's damage operations do what their names say, on the matrices wwaudit
analyses (benchmarks/judgement_damage.py; the benchmark itself is run by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import judgement_damage as dmg  # noqa: E402


def _model(weights: dict[str, np.ndarray], nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, k) for k, w in weights.items()],
    )
    return helper.make_model(graph)


def _site(tensor: str, shape: tuple[int, ...], layout: str, kind: str = "dense") -> dmg.Site:
    return dmg.Site(tensor, 0, tensor, kind, "Op", shape, layout, 0.5)


RNG = np.random.default_rng(1)


@pytest.mark.parametrize(
    "node, shape, expected",
    [
        (helper.make_node("Conv", ["x", "w"], ["y"]), (8, 4, 3, 3), "conv"),
        (helper.make_node("ConvTranspose", ["x", "w"], ["y"]), (4, 8, 3, 3), "convT"),
        (helper.make_node("MatMul", ["x", "w"], ["y"]), (16, 8), "out1"),
        (helper.make_node("Gemm", ["x", "w"], ["y"], transB=1), (8, 16), "out0"),
        (helper.make_node("Gemm", ["x", "w"], ["y"]), (16, 8), "out1"),
        (helper.make_node("Gather", ["w", "x"], ["y"]), (30, 8), "out0"),
        (helper.make_node("Reshape", ["w", "x"], ["y"]), (16, 8), None),
    ],
)
def test_layout_from_the_consuming_op(node: onnx.NodeProto, shape: tuple[int, ...], expected: str | None) -> None:
    model = _model({"w": RNG.standard_normal(shape).astype(np.float32)}, [node])
    assert dmg.layout_of(model, "w", len(shape)) == expected


def test_layout_follows_a_transpose() -> None:
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    model = _model({"w": RNG.standard_normal((8, 16)).astype(np.float32)}, nodes)
    assert dmg.layout_of(model, "w", 2) == "out0"  # stored [out, in], transposed to [in, out] for MatMul


@pytest.mark.parametrize("shape, layout", [((8, 4, 3, 3), "conv"), ((4, 8, 3), "convT"), ((16, 8), "out1"), ((8, 16), "out0")])
def test_matrix_view_round_trips_and_puts_outputs_in_rows(shape: tuple[int, ...], layout: str) -> None:
    w = RNG.standard_normal(shape)
    mats = dmg.to_mats(w, layout)
    assert np.array_equal(dmg.from_mats(mats, layout, shape), w)
    out_features = {"conv": shape[0], "convT": shape[1], "out1": shape[1], "out0": shape[0]}[layout]
    assert mats.shape[1] == out_features
    if layout == "conv":  # kernel position (1, 2) is the matrix W[:, :, 1, 2]
        assert np.array_equal(mats[1 * 3 + 2], w[:, :, 1, 2])


def _damage(variant: str, w: np.ndarray, layout: str, other: np.ndarray | None = None) -> np.ndarray:
    weights = {"w": w.astype(np.float32)}
    if other is not None:
        weights["o"] = other.astype(np.float32)
    model = _model(weights, [])
    site = _site("w", w.shape, layout)
    dmg.apply_layer_damage(model, site, variant, 0, _site("o", other.shape, layout) if other is not None else None)
    return numpy_helper.to_array(dmg.stored_tensors(model, "w")[0])


def test_rank_truncation_per_kernel_position() -> None:
    w = RNG.standard_normal((40, 20, 3))
    got = dmg.to_mats(_damage("rank10", w, "conv").astype(np.float64), "conv")
    assert [np.linalg.matrix_rank(m, tol=1e-4) for m in got] == [2, 2, 2]


def test_norm_preserving_reinit_and_relative_noise() -> None:
    w = RNG.standard_normal((64, 32))
    re = _damage("reinit_norm", w, "out0")
    assert np.linalg.norm(re) == pytest.approx(np.linalg.norm(w), rel=1e-5)
    assert abs(np.corrcoef(re.ravel(), w.ravel())[0, 1]) < 0.1
    noisy = _damage("noise25", w, "out0")
    assert np.linalg.norm(noisy - w) / np.linalg.norm(w) == pytest.approx(0.25, rel=1e-4)


def test_default_init_uses_fan_in_of_the_kernel() -> None:
    got = _damage("reinit_default", RNG.standard_normal((16, 8, 3, 3)), "conv")
    bound = 1 / np.sqrt(8 * 9)
    assert np.abs(got).max() <= bound and np.abs(got).max() > 0.9 * bound


def test_duplicated_rows_columns_and_copied_rows() -> None:
    w = RNG.standard_normal((8, 6))  # MatMul layout [in, out]: output rows are columns of the stored array
    rows = dmg.to_mats(_damage("dup_rows", w, "out1").astype(np.float64), "out1")[0]
    assert np.allclose(rows[3:6], rows[0:3]) and np.allclose(rows[0:3], w.T[0:3], atol=1e-6)
    cols = _damage("dup_cols", w, "out1")
    assert np.allclose(cols[4:8], cols[0:4])
    other = RNG.standard_normal((8, 10))
    copied = dmg.to_mats(_damage("copy_rows", w, "out1", other).astype(np.float64), "out1")[0]
    assert np.allclose(copied[:3], other.T[:3], atol=1e-6) and np.allclose(copied[3:], w.T[3:], atol=1e-6)


def test_round_to_nearest_levels_per_output_channel() -> None:
    w = RNG.standard_normal((12, 5, 3, 3))
    for variant, levels in (("int4", 15), ("int2", 3)):
        got = dmg.to_mats(_damage(variant, w, "conv").astype(np.float64), "conv")
        for row in range(12):
            assert len(np.unique(np.round(got[:, row, :], 5))) <= levels


def test_nan_zeros_scale_keep_dtype() -> None:
    w = RNG.standard_normal((10, 10))
    assert np.isnan(_damage("nan", w, "out0")).sum() == 1
    assert not _damage("zeros", w, "out0").any()
    scaled = _damage("scale30", w, "out0")
    assert scaled.dtype == np.float32 and np.allclose(scaled, 30 * w.astype(np.float32), rtol=1e-5)


def test_weights_found_in_subgraph_constants() -> None:
    const = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.ones((4, 4), np.float32)))
    branch = helper.make_graph(
        [const, helper.make_node("MatMul", ["x", "k"], ["z"])],
        "b",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    model = _model({}, [node])
    assert len(dmg.stored_tensors(model, "k")) == 2  # both branches: ambiguous, never a damage site


def _record(variant: str, scope: str, damage: str, level: str, detected: bool | None, **extra: object) -> dict:
    findings = {"error": 0, "warning": extra.pop("warnings", 0), "info": 0, "rules": extra.pop("rules", {})}
    return {
        "model": extra.pop("model", "m"),
        "split": "tune",
        "domain": "vision",
        "variant": variant,
        "scope": scope,
        "damage": damage,
        "level": level,
        "detected": detected,
        "verdict": extra.pop("verdict", "review" if detected else "pass"),
        "findings": findings,
        **extra,
    }


def test_readme_tables_count_sites_s0_s1_and_whole_model_damage_only() -> None:
    """The README tables leave the third site out of the damage rows and count it only in the all-sites targets."""
    import judgement_report as report

    records = [
        _record("intact", "intact", "intact", "intact", None),
        _record("intact", "intact", "intact", "intact", None, model="n", verdict="review", warnings=1, rules={"WW008": 1}),
        _record("probe_no_layers", "probe", "probe", "probe_no_layers", True, verdict="inconclusive"),
        _record("s0_reinit_norm", "layer", "reinit", "same norm", True, cosine=0.3, large_damage=True),
        _record("s1_reinit_norm", "layer", "reinit", "same norm", False, cosine=0.97, large_damage=False),
        _record("s2_reinit_norm", "layer", "reinit", "same norm", False, cosine=0.2, large_damage=True),
        _record("swap", "model", "swap", "two same-shape layers", False, cosine=0.5, large_damage=True),
    ]
    text = report.readme_tables(records)
    assert "| reinit | same norm | layer | 2 | 1/2 (50%) | 1 | 1/1 (100%) |" in text
    assert "| swap | two same-shape layers | model | 1 | 0/1 (0%) | 1 | 0/1 (0%) |" in text
    assert "| n | review | 1 | 0 | WW008 |" in text
    assert "intact pass 1/2 (50%)" in text
    assert "must-detect damage named 1/2 (50%)" in text
    assert "large functional damage detected 1/2 (50%)" in text
    assert "too (the targets table of `tables.md`): 1/3 (33%) and 1/3 (33%)" in text
    assert "cos [0, 0.5): 1/1 (100%)" in text and "cos [0.95, 0.99): 0/1 (0%)" in text
    assert "**holdout** (0 intact models)" in text
