"""Every stored low-precision format, one op at a time, against onnxruntime (or exact numpy values).

Each test builds a one-op graph holding a weight in one format, lets wwaudit plan and read it,
and compares the matrix with what onnxruntime computes from the same bytes: DequantizeLinear's
output, or the op itself run on an identity input (so its output is the weight it multiplies by).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_models import analysed, layer_specs, ort_dequantize, run_one_node
from wwaudit.ingest import kernels, quant
from wwaudit.engine.core import audit
from wwaudit.ingest.transforms import materialise

MS = "com.microsoft"


def _plan(tmp_path, nodes, consts: dict[str, np.ndarray], inputs: dict[str, tuple[int, list]], opsets=None):
    """Save a graph of `nodes` (weights in `consts`) and return wwaudit's plan of it."""
    opsets = opsets or {"": 21, MS: 1}
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [onnx.ValueInfoProto(name=nodes[-1].output[0])],
        [numpy_helper.from_array(a, n) for n, a in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    return layer_specs(path)


FLOATS = [
    np.float16,
    ml_dtypes.bfloat16,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e4m3fnuz,
    ml_dtypes.float8_e5m2,
    ml_dtypes.float8_e5m2fnuz,
]


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_low_precision_floats_read_exactly(tmp_path, dtype):
    w = np.random.default_rng(0).standard_normal((24, 16)).astype(np.float32).astype(dtype)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    (spec,) = analysed(_plan(tmp_path, [node], {"w": w}, {"x": (TensorProto.FLOAT, [1, 24])}))
    (mat,) = spec.matrices()
    np.testing.assert_array_equal(mat, w.astype(np.float64).T)
    assert quant.describe(spec.source) is None


def _quantized(rng, dtype, shape) -> np.ndarray:
    info = ml_dtypes.iinfo(dtype) if np.dtype(dtype).name in ("int4", "uint4") else np.iinfo(dtype)
    return rng.integers(int(info.min), int(info.max) + 1, size=shape).astype(dtype)


CASES = [  # dtype, axis, block size, zero point
    (np.int8, 1, 0, True),
    (np.uint8, 0, 0, True),
    (np.int8, 1, 0, False),
    (np.int16, 1, 0, True),
    (np.uint16, 0, 0, True),
    (ml_dtypes.int4, 0, 16, True),
    (ml_dtypes.uint4, 1, 8, True),
    (ml_dtypes.int4, 1, 0, False),
    (np.int8, 0, 16, True),
    (np.uint8, 0, 0, None),
]


@pytest.mark.parametrize("dtype,axis,block,with_zp", CASES)
def test_dequantize_linear_matches_onnxruntime(tmp_path, dtype, axis, block, with_zp):
    """with_zp None: a single per-tensor scale; else per-axis (block 0) or blocked scales."""
    rng = np.random.default_rng(1)
    x = _quantized(rng, dtype, (40, 24))
    if with_zp is None:
        scale_shape = ()
    elif block:
        scale_shape = tuple(-(-d // block) if i == axis else d for i, d in enumerate(x.shape))
    else:
        scale_shape = (x.shape[axis],)
    scale = rng.uniform(0.001, 0.1, size=scale_shape).astype(np.float32)
    zp = _quantized(rng, dtype, scale_shape) if with_zp else None
    consts = {"q": x, "s": scale} | ({"z": zp} if zp is not None else {})
    attrs = {"axis": axis} | ({"block_size": block} if block else {})
    dq = helper.make_node("DequantizeLinear", ["q", "s"] + (["z"] if zp is not None else []), ["w"], **attrs)
    mm = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    specs = _plan(tmp_path, [dq, mm], consts, {"x": (TensorProto.FLOAT, [1, 40])})
    (spec,) = analysed(specs)
    expected = ort_dequantize(x, scale, zp, axis, block)
    np.testing.assert_array_equal(materialise(spec.source), expected)
    assert spec.tensor.dtype == np.dtype(dtype).name
    scheme = quant.describe(spec.source)
    assert scheme.endswith("QDQ") and ("blocked" in scheme) == bool(block) and ("per-tensor" in scheme) == (with_zp is None)
    assert all(s.reason.startswith("quantization parameter") for s in specs if s.skipped)


def test_float16_scales_give_float16_weights_like_onnxruntime(tmp_path):
    rng = np.random.default_rng(9)
    x = _quantized(rng, np.int8, (24, 16))
    scale = rng.uniform(0.001, 0.1, size=16).astype(np.float16)
    zp = _quantized(rng, np.int8, (16,))
    dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], axis=1)
    mm = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    (spec,) = analysed(_plan(tmp_path, [dq, mm], {"q": x, "s": scale, "z": zp}, {"x": (TensorProto.FLOAT16, [1, 24])}))
    got = materialise(spec.source)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, ort_dequantize(x, scale, zp, axis=1))
    assert quant.value_dtype(spec.source) == TensorProto.FLOAT16


def test_float8_dequantize_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 20)).astype(ml_dtypes.float8_e4m3fn)
    scale = np.array(0.37, np.float32)
    dq = helper.make_node("DequantizeLinear", ["q", "s"], ["w"])
    mm = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    (spec,) = analysed(_plan(tmp_path, [dq, mm], {"q": x, "s": scale}, {"x": (TensorProto.FLOAT, [1, 32])}))
    np.testing.assert_array_equal(materialise(spec.source), ort_dequantize(x, scale, None))
    assert quant.describe(spec.source) == "float8e4m3fn per-tensor QDQ"
    # The rank-loss epsilon follows the dequantized values (float32 scale), not float8 storage.
    assert quant.value_dtype(spec.source) == TensorProto.FLOAT


@pytest.mark.parametrize("out_type", [np.uint8, np.int8, ml_dtypes.int4])
def test_fake_quantized_float_weights_match_onnxruntime(tmp_path, out_type):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((30, 20)).astype(np.float32)
    scale = rng.uniform(0.01, 0.05, size=20).astype(np.float32)
    zp = np.zeros(20, out_type)
    q = helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], axis=1)
    dq = helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"], axis=1)
    mm = helper.make_node("MatMul", ["x", "wd"], ["y"], name="mm")
    consts = {"w": w, "s": scale, "z": zp}
    (spec,) = analysed(_plan(tmp_path, [q, dq, mm], consts, {"x": (TensorProto.FLOAT, [1, 30])}))
    expected = run_one_node([q, dq], {}, consts, {"": 21})
    np.testing.assert_array_equal(materialise(spec.source), expected)
    assert "fake-quantized" in quant.describe(spec.source)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned values along the last axis, lowest bits first (the layout onnxruntime uses)."""
    per = 8 // bits
    v = values.reshape(values.shape[:-1] + (-1, per)).astype(np.uint8)
    return np.bitwise_or.reduce(v << (np.arange(per, dtype=np.uint8) * bits), axis=-1).astype(np.uint8)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_unpack_bits_is_the_little_endian_bit_stream(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=(3, 16 * 8))
    stream = ((values[..., None] >> np.arange(bits)) & 1).reshape(3, -1).astype(np.uint8)
    packed = np.packbits(stream, axis=-1, bitorder="little")
    np.testing.assert_array_equal(kernels.unpack_bits(packed, bits), values)


@pytest.mark.parametrize("bits,zp_kind", [(4, "packed"), (4, None), (4, "float"), (2, "packed"), (8, "packed"), (8, None)])
def test_matmul_nbits_matches_onnxruntime(tmp_path, bits, zp_kind):
    rng = np.random.default_rng(bits)
    k, n, block = 40, 24, 16  # K is not a multiple of the block: padding must be cropped
    blocks = -(-k // block)
    b = rng.integers(0, 256, size=(n, blocks, block * bits // 8), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.1, size=(n * blocks,)).astype(np.float32)  # flat, as older exporters write
    consts = {"b": b, "s": scales}
    if zp_kind == "packed":
        consts["z"] = _pack(rng.integers(0, 1 << bits, size=(n, -(-blocks * bits // 8) * 8 // bits)), bits)
    elif zp_kind == "float":
        consts["z"] = rng.uniform(0, (1 << bits) - 1, size=(n, blocks)).astype(np.float32)
    node = helper.make_node(
        "MatMulNBits",
        ["a", "b", "s"] + (["z"] if zp_kind else []),
        ["y"],
        domain=MS,
        name="mmnb",
        K=k,
        N=n,
        bits=bits,
        block_size=block,
    )
    (spec,) = analysed(_plan(tmp_path, [node], consts, {"a": (TensorProto.FLOAT, [1, k])}))
    (mat,) = spec.matrices()
    w_t = run_one_node(node, {"a": np.eye(k, dtype=np.float32)}, consts, {"": 21, MS: 1})
    assert mat.shape == (n, k)
    np.testing.assert_allclose(mat, w_t.T, rtol=1e-6, atol=1e-7)
    assert quant.describe(spec.source).startswith(f"MatMulNBits {bits}-bit block {block}")


def test_matmul_nbits_act_order_g_idx():
    """GPTQ act-order models map each input feature to a block through g_idx."""
    rng = np.random.default_rng(7)
    k, n, block = 32, 8, 16
    b = rng.integers(0, 256, size=(n, 2, 8), dtype=np.uint8)
    scales = rng.uniform(0.1, 1, size=(n, 2)).astype(np.float32)
    g_idx = rng.permutation(np.repeat(np.arange(2), 16)).astype(np.int32)
    w = kernels.dequantize_nbits(b, scales, None, g_idx, k, n, 4, block)
    q = kernels.unpack_bits(b, 4).reshape(n, k)
    np.testing.assert_array_equal(w, ((q - 8) * scales[:, g_idx]).astype(np.float32))


@pytest.mark.parametrize("dtype,bits,with_zp", [(np.uint8, 4, True), (np.uint8, 8, False), (ml_dtypes.uint4, 4, True)])
def test_gather_block_quantized_matches_onnxruntime(tmp_path, dtype, bits, with_zp):
    rng = np.random.default_rng(bits)
    vocab, dim, block = 20, 64, 16
    values = rng.integers(0, 1 << bits, size=(vocab, dim))
    packed = dtype == np.uint8 and bits < 8
    data = _pack(values, bits) if packed else values.astype(dtype)
    scales = rng.uniform(0.01, 0.1, size=(vocab, dim // block)).astype(np.float32)
    consts = {"d": data, "s": scales}
    if with_zp:
        zps = rng.integers(0, 1 << bits, size=(vocab, dim // block))
        consts["z"] = _pack(zps, bits) if packed else zps.astype(dtype)
    node = helper.make_node(
        "GatherBlockQuantized",
        ["d", "i", "s"] + (["z"] if with_zp else []),
        ["y"],
        domain=MS,
        name="emb",
        bits=bits,
        block_size=block,
        gather_axis=0,
        quantize_axis=1,
    )
    (spec,) = analysed(_plan(tmp_path, [node], consts, {"i": (TensorProto.INT64, [vocab])}))
    (mat,) = spec.matrices()
    table = run_one_node(node, {"i": np.arange(vocab, dtype=np.int64)}, consts, {"": 21, MS: 1})
    assert mat.shape == (vocab, dim) and spec.view.kind == "embedding"
    np.testing.assert_array_equal(mat, table.astype(np.float64))


@pytest.mark.parametrize("quant_type", [0, 1], ids=["FP4", "NF4"])
def test_matmul_bnb4_matches_onnxruntime(tmp_path, quant_type):
    rng = np.random.default_rng(quant_type)
    k, n, block = 32, 24, 16
    b = rng.integers(0, 256, size=(n * k // 2,), dtype=np.uint8)
    absmax = rng.uniform(0.1, 2, size=(n * k // block,)).astype(np.float32)
    node = helper.make_node(
        "MatMulBnb4", ["a", "b", "m"], ["y"], domain=MS, name="bnb", K=k, N=n, block_size=block, quant_type=quant_type
    )
    (spec,) = analysed(_plan(tmp_path, [node], {"b": b, "m": absmax}, {"a": (TensorProto.FLOAT, [1, k])}))
    (mat,) = spec.matrices()
    w_t = run_one_node(node, {"a": np.eye(k, dtype=np.float32)}, {"b": b, "m": absmax}, {"": 21, MS: 1})
    np.testing.assert_array_equal(mat, w_t.T.astype(np.float64))


def test_matmul_integer_without_scale_analyses_centred_integers(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.integers(-128, 128, size=(32, 16)).astype(np.int8)
    zp = np.array(3, np.int8)
    node = helper.make_node("MatMulInteger", ["a", "w", "az", "wz"], ["y"], name="mmi")
    (spec,) = analysed(
        _plan(tmp_path, [node], {"w": w, "wz": zp, "az": np.array(0, np.uint8)}, {"a": (TensorProto.UINT8, [1, 32])}, {"": 17})
    )
    (mat,) = spec.matrices()
    np.testing.assert_array_equal(mat, (w.astype(np.float64) - 3).T)
    assert any("no weight scale" in note for note in spec.notes)
    assert "no weight scale in the graph" in quant.describe(spec.source)


def test_matmul_integer_scale_found_by_name(tmp_path):
    """When no Mul follows directly, quantize_dynamic's naming (`W_quantized` → `W_scale`) gives the scale."""
    rng = np.random.default_rng(8)
    consts = {
        "w_quantized": rng.integers(-128, 128, size=(32, 16)).astype(np.int8),
        "w_zero_point": np.array(0, np.int8),
        "az": np.array(0, np.uint8),
        "w_scale": np.array(0.03, np.float32),
        "bias": np.zeros(16, np.float32),
    }
    nodes = [
        helper.make_node("MatMulInteger", ["a", "w_quantized", "az", "w_zero_point"], ["yi"], name="mmi"),
        helper.make_node("Cast", ["yi"], ["yf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["yf", "bias"], ["yb"]),
        helper.make_node("Mul", ["yb", "w_scale"], ["y"]),
    ]
    (spec,) = analysed(_plan(tmp_path, nodes, consts, {"a": (TensorProto.UINT8, [1, 32])}, {"": 17}))
    np.testing.assert_array_equal(
        materialise(spec.source), ort_dequantize(consts["w_quantized"], consts["w_scale"], consts["w_zero_point"])
    )
    assert "weight scale 'w_scale' found in the graph" in spec.notes


def test_cast_sub_mul_weight_only_quantization(tmp_path):
    """int8 weights turned into floats by plain ops (Cast → Sub(zero point) → Mul(per-column scale))."""
    rng = np.random.default_rng(5)
    consts = {
        "q": rng.integers(-128, 128, size=(24, 16)).astype(np.int8),
        "z": np.full((1, 16), 2.0, np.float32),
        "s": rng.uniform(0.01, 0.1, size=(1, 16)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["qf", "z"], ["qc"]),
        helper.make_node("Mul", ["qc", "s"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
    ]
    specs = _plan(tmp_path, nodes, consts, {"x": (TensorProto.FLOAT, [1, 24])})
    (spec,) = analysed(specs)
    np.testing.assert_array_equal(materialise(spec.source), run_one_node(nodes[:3], {}, consts, {"": 21}))
    assert quant.describe(spec.source) == "int8 per-channel (scale [1, 16]) Cast → Sub → Mul"
    assert {s.tensor.name: s.reason for s in specs if s.skipped} == {
        "z": "quantization parameter (float) of Sub",
        "s": "quantization parameter (float) of Mul",
    }


def test_cast_sub_without_scale_is_said(tmp_path):
    """A Sub in uint8 (before the Cast) wraps around, exactly as onnxruntime computes it."""
    consts = {"q": np.arange(24 * 16, dtype=np.int64).reshape(24, 16).astype(np.uint8), "z": np.array(100, np.uint8)}
    nodes = [
        helper.make_node("Sub", ["q", "z"], ["qc"]),
        helper.make_node("Cast", ["qc"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
    ]
    (spec,) = analysed(_plan(tmp_path, nodes, consts, {"x": (TensorProto.FLOAT, [1, 24])}))
    np.testing.assert_array_equal(spec.matrices()[0], run_one_node(nodes[:2], {}, consts, {"": 21}).T.astype(np.float64))
    assert quant.describe(spec.source) == "uint8 Cast → Sub, no scale in the graph: centred integers analysed"


def test_qattention_and_dynamic_quantize_matmul(tmp_path):
    rng = np.random.default_rng(6)
    hidden = 16
    wa = rng.integers(-128, 128, size=(hidden, 3 * hidden)).astype(np.int8)
    wm = rng.integers(0, 256, size=(hidden, 24)).astype(np.uint8)
    consts = {
        "wa": wa,
        "sa": np.array(0.02, np.float32),
        "za": np.array(1, np.int8),
        "wm": wm,
        "sm": rng.uniform(0.01, 0.1, size=24).astype(np.float32),
        "zm": np.full(24, 128, np.uint8),
        "bias": np.zeros(3 * hidden, np.float32),
        "xs": np.array(0.1, np.float32),
        "xz": np.array(0, np.uint8),
    }
    nodes = [
        helper.make_node(
            "QAttention", ["xq", "wa", "bias", "xs", "sa", "", "xz", "za"], ["att"], domain=MS, name="attn", num_heads=2
        ),
        helper.make_node("DynamicQuantizeMatMul", ["x", "wm", "sm", "zm"], ["y"], domain=MS, name="dqmm"),
    ]
    specs = analysed(
        _plan(tmp_path, nodes, consts, {"xq": (TensorProto.UINT8, [1, 4, hidden]), "x": (TensorProto.FLOAT, [1, hidden])})
    )
    assert [s.name for s in specs] == ["attn.q", "attn.k", "attn.v", "dqmm"]
    dequantized = (wa.astype(np.float64) - 1) * np.float32(0.02)
    for part, spec in enumerate(specs[:3]):
        np.testing.assert_array_equal(
            spec.matrices()[0], dequantized[:, part * hidden : (part + 1) * hidden].T.astype(np.float32)
        )
    np.testing.assert_array_equal(materialise(specs[3].source), ort_dequantize(wm, consts["sm"], consts["zm"], axis=1))


def test_broken_packed_weight_is_a_layer_error_not_a_crash(tmp_path):
    b = np.zeros((8, 2, 7), np.uint8)  # 7 bytes per block: bits=4, block 16 needs 8
    node = helper.make_node("MatMulNBits", ["a", "b", "s"], ["y"], domain=MS, name="bad", K=32, N=8, bits=4, block_size=16)
    _plan(tmp_path, [node], {"b": b, "s": np.ones((8, 2), np.float32)}, {"a": (TensorProto.FLOAT, [1, 32])})
    result = audit(str(tmp_path / "m.onnx"))
    (layer,) = [layer for layer in result.layers if layer.name == "bad"]
    assert layer.status == "error" and "MatMulNBits B holds 112 bytes" in layer.reason


@pytest.mark.parametrize(
    "op,attrs,consts,expected",
    [
        (
            "GatherBlockQuantized",
            {"bits": 0, "block_size": 16},
            {"d": np.zeros((8, 16), np.uint8), "s": np.ones((8, 1), np.float32)},
            "bits=0",
        ),
        (
            "GatherBlockQuantized",
            {"bits": 4, "block_size": 1 << 40},
            {"d": np.zeros((8, 16), np.uint8), "s": np.ones((8, 1), np.float32)},
            None,
        ),
        (
            "MatMulNBits",
            {"K": 32, "N": -8, "bits": 4, "block_size": 16},
            {"d": np.zeros((8, 2, 8), np.uint8), "s": np.ones(16, np.float32)},
            "N=-8",
        ),
        (
            "MatMulNBits",
            {"K": 32, "N": 8, "bits": 4, "block_size": 16},
            {"d": np.zeros((8, 2, 8), np.uint8), "s": np.ones(16, np.float32), "z": np.zeros(7, np.uint8)},
            "cannot dequantize",
        ),
    ],
)
def test_hostile_quantization_attributes_never_crash(tmp_path, op, attrs, consts, expected):
    """Invalid bits, sizes or shapes give a skipped or error layer with a reason; a huge block is one block."""
    inputs = ["d", "i" if op == "GatherBlockQuantized" else "a", "s"] + (["z"] if "z" in consts else [])
    node = helper.make_node(
        op, [inputs[1], inputs[0]] + inputs[2:] if op == "MatMulNBits" else inputs, ["y"], domain=MS, name="q", **attrs
    )
    _plan(tmp_path, [node], consts, {"i": (TensorProto.INT64, [4]), "a": (TensorProto.FLOAT, [1, 32])})
    (layer,) = [layer for layer in audit(str(tmp_path / "m.onnx")).layers if layer.tensor == "d"]
    if expected is None:
        assert layer.status in ("ok", "fit_failed") and (layer.N, layer.M) == (32, 8)
    else:
        assert layer.status in ("skipped", "error") and expected in layer.reason
