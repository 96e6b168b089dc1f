"""Hand-built graphs: every place ONNX keeps weights, every way a weight reaches its op.

Constant nodes, If branches with their own initializers, Loop and Scan bodies, model-local
functions (weights as formal inputs or Constant nodes in the body), external data read lazily,
sparse initializers, pass-through chains, Slice/Concat gate reordering, and the op layouts
(Gemm trans flags, weights on the left of MatMul, Einsum, batched MatMul, contrib Attention).
Each test asserts the exact set of analysed layers and their (out x in) matrices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from wwaudit.engine.core import audit
from wwaudit.ingest.walker import walk
from wwaudit.ingest.plan import LayerSpec, plan_layers
from wwaudit.ingest.loader import load_model

RNG = np.random.default_rng(0)
OPSET = [helper.make_opsetid("", 17)]


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def vi(name: str, shape: list, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def save(graph: onnx.GraphProto, path: Path, **kw) -> Path:
    model = helper.make_model(graph, opset_imports=kw.pop("opsets", OPSET), **kw)
    onnx.save(model, str(path))
    return path


def plan(path: Path) -> tuple[list[LayerSpec], int]:
    loaded = load_model(str(path))
    walked = walk(loaded.proto, loaded.base_dir)
    return plan_layers(walked), len(walked.tensors)


def analysed(specs: list[LayerSpec]) -> dict[str, LayerSpec]:
    out = {s.name: s for s in specs if not s.skipped}
    assert len(out) == sum(not s.skipped for s in specs), "two analysed layers share a name"
    return out


def assert_matrices(spec: LayerSpec, expected: list[np.ndarray]) -> None:
    got = spec.matrices()
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and np.array_equal(g, e.astype(np.float64))
    N, M, slices = spec.shape_info()
    assert (N, M, slices) == (max(expected[0].shape), min(expected[0].shape), len(expected))


def test_constant_nodes_and_value_floats(tmp_path: Path) -> None:
    w = rand(32, 16)
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "wc")),
            helper.make_node("Constant", [], ["b"], value_floats=[0.5] * 16),
            helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
            helper.make_node("Add", ["h", "b"], ["y"], name="add"),
        ],
        "g",
        [vi("x", [1, 32])],
        [vi("y", [1, 16])],
    )
    specs, count = plan(save(graph, tmp_path / "m.onnx"))
    layers = analysed(specs)
    assert set(layers) == {"fc"}
    assert_matrices(layers["fc"], [w.T])
    assert layers["fc"].tensor.origin == "constant"
    skipped = {s.tensor.name: s.reason for s in specs if s.skipped}
    assert skipped == {"b": "1-D (bias, norm scale or shape vector)"}
    assert count == 2


def test_if_branches_with_their_own_initializers(tmp_path: Path) -> None:
    w_then, w_else, w_outer = rand(24, 16), rand(16, 24), rand(16, 16)
    then_g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "wt"], ["o"], name="then_fc", transB=1)],
        "then",
        [],
        [vi("o", [1, 24])],
        [numpy_helper.from_array(w_then, "wt")],
    )
    else_g = helper.make_graph(
        # the else branch also reads an outer-scope initializer
        [
            helper.make_node("MatMul", ["x", "wo"], ["t"], name="else_outer"),
            helper.make_node("MatMul", ["t", "we"], ["o"], name="else_fc"),
        ],
        "else",
        [],
        [vi("o", [1, 24])],
        [numpy_helper.from_array(w_else, "we")],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)],
        "g",
        [vi("c", [], TensorProto.BOOL), vi("x", [1, 16])],
        [vi("y", [1, 24])],
        [numpy_helper.from_array(w_outer, "wo")],
    )
    specs, count = plan(save(graph, tmp_path / "m.onnx"))
    layers = analysed(specs)
    assert set(layers) == {"then_fc", "else_outer", "else_fc"}
    assert_matrices(layers["then_fc"], [w_then])
    assert_matrices(layers["else_fc"], [w_else.T])
    assert_matrices(layers["else_outer"], [w_outer.T])
    assert layers["then_fc"].tensor.scope == "branch.then_branch"
    assert layers["else_fc"].tensor.scope == "branch.else_branch"
    assert layers["else_outer"].tensor.scope == ""
    assert count == 3
    # the audit says where the weight lives
    result = audit(str(tmp_path / "m.onnx"))
    by_name = {layer.name: layer for layer in result.layers}
    assert "in branch.then_branch" in by_name["then_fc"].notes


def test_loop_and_scan_bodies(tmp_path: Path) -> None:
    w_loop, w_scan, w_outer = rand(16, 16), rand(16, 12), rand(12, 16)
    loop_body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "wl"], ["h_out"], name="loop_fc"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "loop_body",
        [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("h_in", [1, 16])],
        [vi("cond_out", [], TensorProto.BOOL), vi("h_out", [1, 16])],
        [numpy_helper.from_array(w_loop, "wl")],
    )
    scan_body = helper.make_graph(
        [
            helper.make_node("MatMul", ["s_in", "ws"], ["s_out"], name="scan_fc"),
            helper.make_node("MatMul", ["s_out", "wouter"], ["s_back"], name="scan_outer"),
            # a body input named like an outer initializer hides it: 'shadow' is data here
            helper.make_node("Add", ["s_back", "shadow"], ["s_sum"], name="add"),
        ],
        "scan_body",
        [vi("s_in", [1, 16]), vi("shadow", [1, 16])],
        [vi("s_sum", [1, 16])],
        [numpy_helper.from_array(w_scan, "ws")],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trip", "", "x"], ["h"], name="loop", body=loop_body),
            helper.make_node("Scan", ["seq", "seq"], ["z"], name="scan", body=scan_body, num_scan_inputs=2),
        ],
        "g",
        [vi("trip", [], TensorProto.INT64), vi("x", [1, 16]), vi("seq", [5, 1, 16])],
        [vi("h", [1, 16]), vi("z", [5, 1, 16])],
        [numpy_helper.from_array(w_outer, "wouter"), numpy_helper.from_array(rand(16, 16), "shadow")],
    )
    specs, count = plan(save(graph, tmp_path / "m.onnx"))
    layers = analysed(specs)
    assert set(layers) == {"loop_fc", "scan_fc", "scan_outer"}
    assert_matrices(layers["loop_fc"], [w_loop.T])
    assert_matrices(layers["scan_fc"], [w_scan.T])
    assert_matrices(layers["scan_outer"], [w_outer.T])
    shadow = [s for s in specs if s.tensor.name == "shadow"]
    assert len(shadow) == 1 and shadow[0].reason == "not consumed by any op"
    assert count == 4


def test_model_local_functions(tmp_path: Path) -> None:
    """A weight passed as a formal input, and a weight held by a Constant in the body."""
    w_arg, w_const, w_unused = rand(16, 24), rand(24, 10), rand(10, 10)
    dense = helper.make_function(
        "local",
        "Dense",
        ["x", "w"],
        ["y"],
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fn_mm")],
        OPSET,
    )
    head = helper.make_function(
        "local",
        "Head",
        ["x"],
        ["y"],
        [
            helper.make_node("Constant", [], ["wc"], value=numpy_helper.from_array(w_const, "wc")),
            helper.make_node("MatMul", ["x", "wc"], ["y"], name="head_mm"),
        ],
        OPSET,
    )
    never = helper.make_function(
        "local",
        "Never",
        ["x"],
        ["y"],
        [
            helper.make_node("Constant", [], ["wn"], value=numpy_helper.from_array(w_unused, "wn")),
            helper.make_node("MatMul", ["x", "wn"], ["y"]),
        ],
        OPSET,
    )
    graph = helper.make_graph(
        [
            helper.make_node("Dense", ["x", "w1"], ["h"], name="call_dense", domain="local"),
            helper.make_node("Head", ["h"], ["y1"], name="call_head_a", domain="local"),
            helper.make_node("Head", ["h"], ["y2"], name="call_head_b", domain="local"),
        ],
        "g",
        [vi("x", [1, 16])],
        [vi("y1", [1, 10]), vi("y2", [1, 10])],
        [numpy_helper.from_array(w_arg, "w1")],
    )
    path = save(graph, tmp_path / "m.onnx", opsets=OPSET + [helper.make_opsetid("local", 1)], functions=[dense, head, never])
    specs, count = plan(path)
    layers = analysed(specs)
    # the Head function is called twice: its Constant weight is one tensor, analysed once
    assert set(layers) == {"fn_mm", "head_mm"}
    assert_matrices(layers["fn_mm"], [w_arg.T])
    assert layers["fn_mm"].tensor.name == "w1" and layers["fn_mm"].tensor.scope == ""
    assert_matrices(layers["head_mm"], [w_const.T])
    unused = [s for s in specs if s.tensor.name == "wn"]
    assert len(unused) == 1 and unused[0].skipped and unused[0].reason == "not consumed by any op"
    assert count == 3


def test_external_data_is_read_lazily(tmp_path: Path) -> None:
    w1, w2 = rand(64, 32), rand(32, 16)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Gemm", ["h", "w2"], ["y"], name="fc2")],
        "g",
        [vi("x", [1, 64])],
        [vi("y", [1, 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin", size_threshold=0)
    assert path.stat().st_size < 1000 and (tmp_path / "ext.bin").stat().st_size == (w1.size + w2.size) * 4
    specs, _ = plan(path)
    layers = analysed(specs)
    assert set(layers) == {"fc1", "fc2"}
    assert all(s.tensor.is_external for s in layers.values())
    # the stored bytes are mapped, not copied
    raw = layers["fc1"].tensor.load()
    assert not raw.flags.owndata and not raw.flags.writeable
    assert_matrices(layers["fc1"], [w1.T])
    assert_matrices(layers["fc2"], [w2.T])
    result = audit(str(path))
    assert result.model.external_data is True
    assert [layer.name for layer in result.layers if layer.analysed] == ["fc1", "fc2"]


def test_sparse_initializer(tmp_path: Path) -> None:
    dense = np.zeros((16, 12), dtype=np.float32)
    idx = RNG.choice(dense.size, size=60, replace=False)
    dense.flat[idx] = RNG.standard_normal(60).astype(np.float32)
    flat = np.sort(idx).astype(np.int64)
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(dense.flat[flat], "ws"), numpy_helper.from_array(flat, "ws_idx"), [16, 12]
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "ws"], ["y"], name="sparse_fc")],
        "g",
        [vi("x", [1, 16])],
        [vi("y", [1, 12])],
        sparse_initializer=[sparse],
    )
    specs, count = plan(save(graph, tmp_path / "m.onnx"))
    layers = analysed(specs)
    assert set(layers) == {"sparse_fc"} and layers["sparse_fc"].tensor.origin == "sparse_initializer"
    assert_matrices(layers["sparse_fc"], [dense.T])
    assert count == 1


def test_pass_through_chains(tmp_path: Path) -> None:
    """Transpose, Reshape, Cast, Unsqueeze/Squeeze and Flatten are followed back to the stored tensor."""
    w_t, w_flat, w_half = rand(24, 16), rand(16 * 8), rand(8, 16)
    shape = numpy_helper.from_array(np.array([16, 8], dtype=np.int64), "shape")
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["wt"], ["wt_T"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt_T"], ["a"], name="via_transpose"),
            helper.make_node("Reshape", ["wflat", "shape"], ["w_2d"]),
            helper.make_node("Identity", ["w_2d"], ["w_id"]),
            helper.make_node("MatMul", ["x", "w_id"], ["b"], name="via_reshape"),
            helper.make_node("Cast", ["wh"], ["wh32"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["wh32", "axes"], ["wh3"]),
            helper.make_node("Squeeze", ["wh3", "axes"], ["wh2"]),
            helper.make_node("Flatten", ["wh2"], ["wh_flat"], axis=1),
            helper.make_node("Gemm", ["x", "wh_flat"], ["c"], name="via_cast", transB=1),
        ],
        "g",
        [vi("x", [1, 16])],
        [vi("a", [1, 24]), vi("b", [1, 8]), vi("c", [1, 8])],
        [
            numpy_helper.from_array(w_t, "wt"),
            numpy_helper.from_array(w_flat, "wflat"),
            numpy_helper.from_array(w_half.astype(np.float16), "wh"),
            shape,
            axes,
        ],
    )
    specs, count = plan(save(graph, tmp_path / "m.onnx"))
    layers = analysed(specs)
    assert set(layers) == {"via_transpose", "via_reshape", "via_cast"}
    assert_matrices(layers["via_transpose"], [w_t])  # x @ wt.T: wt is already (out x in)
    assert_matrices(layers["via_reshape"], [w_flat.reshape(16, 8).T])  # stored 1-D, used as a matrix
    assert_matrices(layers["via_cast"], [w_half.astype(np.float16).astype(np.float32)])
    assert layers["via_cast"].tensor.dtype == "float16"
    skipped = {s.tensor.name: s.reason for s in specs if s.skipped}
    assert set(skipped) == {"shape", "axes"} and all(r.startswith(("1-D", "integer")) for r in skipped.values())
    assert count == 5


def test_slice_concat_gate_reordering(tmp_path: Path) -> None:
    """TorchScript without constant folding reorders LSTM gates i,f,g,o -> i,o,f,c with Slice + Concat."""
    hidden, inputs = 8, 10
    w_ih, w_hh = rand(4 * hidden, inputs), rand(4 * hidden, hidden)
    nodes, inits = [], [numpy_helper.from_array(w_ih, "w_ih"), numpy_helper.from_array(w_hh, "w_hh")]
    for name in ("w_ih", "w_hh"):
        parts = []
        for k, (start, end) in enumerate([(0, hidden), (3 * hidden, 4 * hidden), (hidden, 3 * hidden)]):
            for tag, value in (("s", start), ("e", end), ("a", 0)):
                nodes.append(
                    helper.make_node(
                        "Constant", [], [f"{name}_{tag}{k}"], value=numpy_helper.from_array(np.array([value], dtype=np.int64))
                    )
                )
            nodes.append(helper.make_node("Slice", [name, f"{name}_s{k}", f"{name}_e{k}", f"{name}_a{k}"], [f"{name}_part{k}"]))
            parts.append(f"{name}_part{k}")
        nodes.append(helper.make_node("Concat", parts, [f"{name}_cat"], axis=0))
        nodes.append(helper.make_node("Unsqueeze", [f"{name}_cat", "zero"], [f"{name}_3d"]))
    nodes.append(helper.make_node("LSTM", ["x", "w_ih_3d", "w_hh_3d"], ["y"], name="lstm", hidden_size=hidden))
    inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"))
    graph = helper.make_graph(nodes, "g", [vi("x", [5, 1, inputs])], [vi("y", [5, 1, 1, hidden])], inits)
    specs, _ = plan(save(graph, tmp_path / "m.onnx"))
    layers = analysed(specs)
    torch_rows = {"i": 0, "f": 1, "c": 2, "o": 3}  # torch's gate blocks
    expected = {f"lstm.{which}.{gate}" for which in "WR" for gate in "iofc"}
    assert set(layers) == expected
    for gate, k in torch_rows.items():
        assert_matrices(layers[f"lstm.W.{gate}"], [w_ih[k * hidden : (k + 1) * hidden]])
        assert_matrices(layers[f"lstm.R.{gate}"], [w_hh[k * hidden : (k + 1) * hidden]])


def test_slices_of_one_packed_tensor_are_separate_layers(tmp_path: Path) -> None:
    """A packed QKV weight cut into three MatMuls gives three layers, not one shared weight."""
    packed = rand(16, 48)
    nodes, inits = [], [numpy_helper.from_array(packed, "qkv")]
    for k, part in enumerate("qkv"):
        inits += [
            numpy_helper.from_array(np.array([16 * k], dtype=np.int64), f"s{k}"),
            numpy_helper.from_array(np.array([16 * (k + 1)], dtype=np.int64), f"e{k}"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), f"a{k}"),
        ]
        nodes += [
            helper.make_node("Slice", ["qkv", f"s{k}", f"e{k}", f"a{k}"], [f"w_{part}"]),
            helper.make_node("MatMul", ["x", f"w_{part}"], [part], name=f"proj_{part}"),
        ]
    graph = helper.make_graph(nodes, "g", [vi("x", [1, 16])], [vi(p, [1, 16]) for p in "qkv"], inits)
    specs, _ = plan(save(graph, tmp_path / "m.onnx"))
    layers = analysed(specs)
    assert set(layers) == {"proj_q", "proj_k", "proj_v"}
    for k, part in enumerate("qkv"):
        assert_matrices(layers[f"proj_{part}"], [packed[:, 16 * k : 16 * (k + 1)].T])


@pytest.mark.parametrize(
    "node, weight, expected",
    [
        (helper.make_node("Gemm", ["w", "x"], ["y"], name="l"), rand(24, 16), lambda w: w),  # weight as A: (out x in)
        (helper.make_node("Gemm", ["w", "x"], ["y"], name="l", transA=1), rand(16, 24), lambda w: w.T),
        (helper.make_node("Gemm", ["x", "w"], ["y"], name="l"), rand(16, 24), lambda w: w.T),
        (helper.make_node("MatMul", ["w", "x"], ["y"], name="l"), rand(24, 16), lambda w: w),
        (helper.make_node("Einsum", ["x", "w"], ["y"], name="l", equation="bi,io->bo"), rand(16, 24), lambda w: w.T),
        (helper.make_node("Einsum", ["x", "w"], ["y"], name="l", equation="bi,oi->bo"), rand(24, 16), lambda w: w),
        (
            helper.make_node("FusedMatMul", ["x", "w"], ["y"], name="l", domain="com.microsoft", transB=1),
            rand(24, 16),
            lambda w: w,
        ),
    ],
    ids=["gemm_A", "gemm_transA", "gemm_B", "matmul_left", "einsum_io", "einsum_oi", "fusedmatmul_transB"],
)
def test_op_layouts(node: onnx.NodeProto, weight: np.ndarray, expected, tmp_path: Path) -> None:
    graph = helper.make_graph([node], "g", [vi("x", None)], [vi("y", None)], [numpy_helper.from_array(weight, "w")])
    specs, _ = plan(save(graph, tmp_path / "m.onnx", opsets=OPSET + [helper.make_opsetid("com.microsoft", 1)]))
    layers = analysed(specs)
    assert set(layers) == {"l"}
    assert_matrices(layers["l"], [expected(weight)])


def test_batched_matmul_weight_and_contrib_attention(tmp_path: Path) -> None:
    batched, qkv = rand(3, 16, 12), rand(16, 48)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x3", "wb"], ["y3"], name="batched"),
            helper.make_node("Attention", ["x", "qkv"], ["att"], name="attn", domain="com.microsoft", num_heads=2),
        ],
        "g",
        [vi("x3", [3, 1, 16]), vi("x", [1, 5, 16])],
        [vi("y3", [3, 1, 12]), vi("att", [1, 5, 16])],
        [numpy_helper.from_array(batched, "wb"), numpy_helper.from_array(qkv, "qkv")],
    )
    specs, _ = plan(save(graph, tmp_path / "m.onnx", opsets=OPSET + [helper.make_opsetid("com.microsoft", 1)]))
    layers = analysed(specs)
    assert set(layers) == {"batched", "attn.q", "attn.k", "attn.v"}
    assert_matrices(layers["batched"], [m.T for m in batched])
    for k, part in enumerate("qkv"):
        assert_matrices(layers[f"attn.{part}"], [qkv[:, 16 * k : 16 * (k + 1)].T])
        assert layers[f"attn.{part}"].view.kind == "attention"


def test_small_and_integer_tensors_are_skipped_with_reasons(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "tiny"], ["a"], name="tiny_fc"),
            helper.make_node("Gather", ["table", "ids"], ["b"], name="lookup"),
            helper.make_node("Add", ["a", "scalar"], ["c"], name="add"),
        ],
        "g",
        [vi("x", [1, 4])],
        [vi("b", [3, 4]), vi("c", [1, 4])],
        [
            numpy_helper.from_array(rand(4, 4), "tiny"),
            numpy_helper.from_array(np.arange(12, dtype=np.int64).reshape(3, 4), "table"),
            numpy_helper.from_array(np.array([0, 1, 2], dtype=np.int64), "ids"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "scalar"),
        ],
    )
    specs, count = plan(save(graph, tmp_path / "m.onnx"))
    assert not analysed(specs)
    reasons = {s.tensor.name: s.reason for s in specs}
    assert reasons == {
        "tiny": "too small: 4 eigenvalues < 8",
        "table": "integer tensor (int64): indices, shapes or quantization parameters",
        "ids": "1-D (bias, norm scale or shape vector)",
        "scalar": "scalar",
    }
    assert count == 4


def test_forged_slice_and_concat_chains_stay_bounded(tmp_path: Path) -> None:
    """Concat-of-concat chains stop being followed past a small depth; bad Slice bounds are reasons."""
    nodes, prev = [], "w"
    for k in range(40):
        nodes.append(helper.make_node("Concat", [prev, prev], [f"c{k}"], axis=0))
        prev = f"c{k}"
    nodes.append(helper.make_node("MatMul", ["x", prev], ["y"], name="deep"))
    nodes.append(helper.make_node("Slice", ["v", "s", "e", "a", "zero_step"], ["v_part"]))
    nodes.append(helper.make_node("MatMul", ["x2", "v_part"], ["y2"], name="bad_slice"))
    inits = [
        numpy_helper.from_array(rand(2, 16), "w"),
        numpy_helper.from_array(rand(16, 16), "v"),
        *(numpy_helper.from_array(np.array([v], dtype=np.int64), n) for n, v in (("s", 0), ("e", 8), ("a", 0), ("zero_step", 0))),
    ]
    graph = helper.make_graph(nodes, "g", [vi("x", None), vi("x2", None)], [vi("y", None), vi("y2", None)], inits)
    path = save(graph, tmp_path / "m.onnx")
    specs, _ = plan(path)
    reasons = {s.tensor.name: s.reason for s in specs}
    assert reasons["w"] == "not a weight slot: Concat is not a weight-consuming op"
    assert reasons["v"].startswith("Slice parameters")
    assert audit(str(path)).summary["analysed"] == 0


def test_tied_weight_read_by_two_ops_is_one_layer(tmp_path: Path) -> None:
    """An embedding table also read (transposed) by the LM head: one layer, both consumers."""
    table = rand(40, 16)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["h"], name="embed"),
            helper.make_node("Transpose", ["table"], ["table_T"], perm=[1, 0]),
            helper.make_node("MatMul", ["h", "table_T"], ["logits"], name="lm_head"),
        ],
        "g",
        [vi("ids", [1, 3], TensorProto.INT64)],
        [vi("logits", [1, 3, 40])],
        [numpy_helper.from_array(table, "table")],
    )
    specs, count = plan(save(graph, tmp_path / "m.onnx"))
    layers = analysed(specs)
    assert set(layers) == {"embed"} and layers["embed"].used_by == ["embed", "lm_head"]
    assert layers["embed"].view.kind == "embedding"
    assert_matrices(layers["embed"], [table])
    assert count == 1
