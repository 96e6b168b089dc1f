"""Small float models with structured weights, and helpers to read what wwaudit and onnxruntime see.

The weights have power-law singular values (W = U·diag(k^-0.7)·Vᵀ plus a little noise), so their
spectra look like trained layers' and per-layer metrics are meaningful to compare before and
after quantization. Used by tests/test_quant.py and tests/test_quant_formats.py.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from wwaudit.ingest.walker import walk
from wwaudit.ingest.plan import LayerSpec, plan_layers


def structured(rng: np.random.Generator, out: int, inn: int, decay: float = 0.7) -> np.ndarray:
    """An (out x in) float32 matrix with power-law singular values."""
    u, _ = np.linalg.qr(rng.standard_normal((out, out)))
    v, _ = np.linalg.qr(rng.standard_normal((inn, inn)))
    k = min(out, inn)
    s = np.arange(1, k + 1, dtype=np.float64) ** -decay
    return ((u[:, :k] * s) @ v[:, :k].T + 0.02 * rng.standard_normal((out, inn))).astype(np.float32)


def cnn_model(seed: int = 0) -> onnx.ModelProto:
    """Conv → Conv → Gemm(transB=1) → MatMul([in, out]): the four weight layouts quantizers rewrite."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv1.weight": structured(rng, 32, 2 * 9).reshape(32, 2, 3, 3),
        "conv2.weight": structured(rng, 64, 32 * 9).reshape(64, 32, 3, 3),
        "fc1.weight": structured(rng, 128, 64 * 4 * 4),
        "fc2.weight": structured(rng, 40, 128).T.copy(),
        "conv1.bias": np.zeros(32, np.float32),
        "conv2.bias": np.zeros(64, np.float32),
        "fc1.bias": np.zeros(128, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["g"], name="fc1", transB=1),
        helper.make_node("Relu", ["g"], ["r3"]),
        helper.make_node("MatMul", ["r3", "fc2.weight"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 40])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def rnn_model(seed: int = 1, vocab: int = 60, embed: int = 32, hidden: int = 24) -> onnx.ModelProto:
    """Gather embedding → LSTM → MatMul head."""
    rng = np.random.default_rng(seed)
    weights = {
        "embed.weight": structured(rng, vocab, embed),
        "lstm.W": structured(rng, 4 * hidden, embed)[None],
        "lstm.R": structured(rng, 4 * hidden, hidden)[None],
        "lstm.B": np.zeros((1, 8 * hidden), np.float32),
        "head.weight": structured(rng, vocab, hidden).T.copy(),
        "one": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["embed.weight", "ids"], ["e"], name="embed"),
        helper.make_node("LSTM", ["e", "lstm.W", "lstm.R", "lstm.B"], ["Y", "Yh", "Yc"], name="lstm", hidden_size=hidden),
        helper.make_node("Squeeze", ["Y", "one"], ["ys"]),
        helper.make_node("MatMul", ["ys", "head.weight"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "rnn",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["T", "B"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["T", "B", vocab])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def layer_specs(path: str) -> list[LayerSpec]:
    """wwaudit's plan for a model file (layers and skipped entries)."""
    model = onnx.load(path)
    return plan_layers(walk(model, os.path.dirname(os.path.abspath(path))))


def analysed(specs: list[LayerSpec]) -> list[LayerSpec]:
    return [s for s in specs if not s.skipped]


def stored(path: str) -> dict[str, np.ndarray]:
    """Initializers of a model file by name."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def run_one_node(node, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray], opsets: dict[str, int]) -> np.ndarray:
    """Run a node (or a list of nodes) in onnxruntime: `consts` become initializers, `inputs` are fed;
    returns the last node's first output."""
    nodes = node if isinstance(node, list) else [node]
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for n, a in inputs.items()]
    out = onnx.ValueInfoProto(name=nodes[-1].output[0])  # type left to onnxruntime's inference
    graph = helper.make_graph(nodes, "one", ins, [out], [numpy_helper.from_array(a, n) for n, a in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def ort_dequantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1, block_size: int = 0
) -> np.ndarray:
    """onnxruntime's own DequantizeLinear of a stored tensor (opset 21)."""
    consts = {"x": x, "s": scale}
    names = ["x", "s"]
    if zero_point is not None:
        consts["z"] = zero_point
        names.append("z")
    attrs = {"axis": axis}
    if block_size:
        attrs["block_size"] = block_size
    node = helper.make_node("DequantizeLinear", names, ["y"], **attrs)
    return run_one_node(node, {}, consts, {"": 21})
