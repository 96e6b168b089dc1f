"""Controlled damage for the judgement benchmark: find a weight in an ONNX file, view it as the
(out x in) matrices wwaudit analyses, damage it, write the model back.

Only weights stored whole as a float32/float16 tensor (graph initializer or Constant node, in
any subgraph) are damaged: a slice of a packed tensor (LSTM gates, fused QKV) or a quantized
weight would change other layers too, and the damaged layer would no longer be one layer.

The matrix view follows wwaudit's "What is a layer" (README): rows are output features; a conv
kernel [out, in, k...] gives one (out x in) matrix per kernel position, a ConvTranspose kernel
[in, out, k...] the transposed ones; a MatMul weight on the right ([in, out]) is transposed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
PASS_THROUGH = ("Identity", "Cast")


@dataclass(frozen=True)
class Site:
    """One damageable layer, taken from the intact model's wwaudit JSON."""

    tensor: str
    layer_id: int
    name: str
    kind: str
    op: str
    shape: tuple[int, ...]
    layout: str  # conv | convT | out0 | out1
    depth: float  # position among the analysed layers, 0..1


def stable_seed(*parts: object) -> int:
    """A seed that depends only on its parts (Python's hash() is salted per process)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def stored_tensors(model: onnx.ModelProto, name: str) -> list[onnx.TensorProto]:
    """Every stored tensor called `name`: initializers and Constant `value`s, in all subgraphs."""
    found = []
    for graph in _graphs(model.graph):
        found += [t for t in graph.initializer if t.name == name]
        for node in graph.node:
            if node.op_type == "Constant" and node.output and node.output[0] == name:
                found += [a.t for a in node.attribute if a.name == "value"]
    return found


def _consumers(model: onnx.ModelProto, name: str) -> list[tuple[onnx.NodeProto, int]]:
    return [(n, i) for g in _graphs(model.graph) for n in g.node for i, x in enumerate(n.input) if x == name]


def _attr(node: onnx.NodeProto, key: str, default: int = 0) -> int:
    return next((a.i for a in node.attribute if a.name == key), default)


def layout_of(model: onnx.ModelProto, name: str, rank: int) -> str | None:
    """How the stored tensor maps onto (out x in) matrices, from the op that consumes it.

    Follows Identity/Cast and a 2-D Transpose; anything else (Reshape, Slice, several consumers
    that disagree) gives None and the tensor is not used as a damage site.
    """
    flipped, current = False, name
    for _hop in range(4):
        users = _consumers(model, current)
        if len(users) != 1:
            return None
        node, slot = users[0]
        if node.op_type in PASS_THROUGH:
            current = node.output[0]
            continue
        if node.op_type == "Transpose" and rank == 2:
            flipped, current = not flipped, node.output[0]
            continue
        return _direct_layout(node, slot, rank, flipped)
    return None


def _direct_layout(node: onnx.NodeProto, slot: int, rank: int, flipped: bool) -> str | None:
    if node.op_type == "Conv" and slot == 1 and rank >= 3 and not flipped:
        return "conv"
    if node.op_type == "ConvTranspose" and slot == 1 and rank >= 3 and not flipped:
        return "convT"
    if rank != 2:
        return None
    if node.op_type == "Gemm" and slot == 1:
        base = "out0" if _attr(node, "transB") else "out1"
    elif node.op_type == "MatMul":
        base = "out1" if slot == 1 else "out0"
    elif node.op_type == "Gather" and slot == 0:
        base = "out0"
    else:
        return None
    return {"out0": "out1", "out1": "out0"}[base] if flipped else base


def to_mats(w: np.ndarray, layout: str) -> np.ndarray:
    """(P, out, in) matrices of a weight, P = kernel positions (1 for a dense weight)."""
    if layout == "conv":
        return w.reshape(w.shape[0], w.shape[1], -1).transpose(2, 0, 1)
    if layout == "convT":
        return w.reshape(w.shape[0], w.shape[1], -1).transpose(2, 1, 0)
    return (w if layout == "out0" else w.T)[None]


def from_mats(mats: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of to_mats."""
    if layout == "conv":
        return mats.transpose(1, 2, 0).reshape(shape)
    if layout == "convT":
        return mats.transpose(2, 1, 0).reshape(shape)
    return mats[0] if layout == "out0" else mats[0].T


# ---- damage operations on (P, out, in) float64 matrices ------------------------------------------
Op = Callable[[np.ndarray, np.random.Generator, dict], np.ndarray]


def _reinit_norm(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
    g = rng.standard_normal(m.shape)
    return g * (np.linalg.norm(m) / np.linalg.norm(g))


def _reinit_default(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
    """torch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); embeddings N(0, 1)."""
    if ctx["kind"] == "embedding":
        return rng.standard_normal(m.shape)
    bound = 1.0 / np.sqrt(m.shape[2] * m.shape[0])  # in_features x kernel positions
    return rng.uniform(-bound, bound, m.shape)


def _noise(frac: float) -> Op:
    def op(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
        g = rng.standard_normal(m.shape)
        return m + g * (frac * np.linalg.norm(m) / np.linalg.norm(g))

    return op


def _rank(frac: float) -> Op:
    def op(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
        k = max(1, int(round(frac * min(m.shape[1:]))))
        u, s, vt = np.linalg.svd(m, full_matrices=False)
        return (u[:, :, :k] * s[:, None, :k]) @ vt[:, :k, :]

    return op


def _dup_rows(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
    out, h = m.copy(), m.shape[1] // 2
    out[:, h : 2 * h] = m[:, :h]
    return out


def _dup_cols(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
    out, h = m.copy(), m.shape[2] // 2
    out[:, :, h : 2 * h] = m[:, :, :h]
    return out


def _copy_rows(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
    """The first half of the output rows replaced by rows of another layer of the same width."""
    other = ctx["other"]
    out = m.copy()
    h = min(m.shape[1] // 2, other.shape[1])
    out[:, :h] = other[np.arange(m.shape[0]) % other.shape[0], :h]
    return out


def _scale(factor: float) -> Op:
    return lambda m, rng, ctx: m * factor


def _nan(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
    out = m.copy()
    out[tuple(int(rng.integers(d)) for d in m.shape)] = np.nan
    return out


def rtn(bits: int) -> Op:
    """Round-to-nearest, symmetric, one scale per output channel (row across all positions)."""
    qmax = 2 ** (bits - 1) - 1

    def op(m: np.ndarray, rng: np.random.Generator, ctx: dict) -> np.ndarray:
        scale = np.abs(m).max(axis=(0, 2), keepdims=True) / qmax
        scale[scale == 0] = 1.0
        return np.clip(np.round(m / scale), -qmax, qmax) * scale

    return op


# variant name -> (damage type, level, operation); applied to one site
LAYER_VARIANTS: dict[str, tuple[str, str, Op]] = {
    "reinit_norm": ("reinit", "same norm", _reinit_norm),
    "reinit_default": ("reinit", "default init", _reinit_default),
    "noise10": ("noise", "10%", _noise(0.10)),
    "noise25": ("noise", "25%", _noise(0.25)),
    "noise50": ("noise", "50%", _noise(0.50)),
    "noise100": ("noise", "100%", _noise(1.00)),
    "rank50": ("rank", "50%", _rank(0.50)),
    "rank10": ("rank", "10%", _rank(0.10)),
    "rank2": ("rank", "2%", _rank(0.02)),
    "dup_rows": ("duplicate", "rows", _dup_rows),
    "dup_cols": ("duplicate", "columns", _dup_cols),
    "copy_rows": ("duplicate", "rows from another layer", _copy_rows),
    "scale3": ("scale", "x3", _scale(3.0)),
    "scale30": ("scale", "x30", _scale(30.0)),
    "zeros": ("zeros", "all", lambda m, rng, ctx: np.zeros_like(m)),
    "nan": ("nan", "one element", _nan),
    "int4": ("quantize", "int4 layer", rtn(4)),
    "int2": ("quantize", "int2 layer", rtn(2)),
}
# model-level variants: (damage type, level)
MODEL_VARIANTS: dict[str, tuple[str, str]] = {
    "swap": ("swap", "two same-shape layers"),
    "model_int4": ("quantize", "int4 whole model"),
    "model_int2": ("quantize", "int2 whole model"),
}


def read_weight(model: onnx.ModelProto, site: Site) -> np.ndarray:
    return numpy_helper.to_array(stored_tensors(model, site.tensor)[0])


def write_weight(model: onnx.ModelProto, site: Site, value: np.ndarray) -> None:
    """Store `value` in place of the site's tensor, in its original dtype."""
    target = stored_tensors(model, site.tensor)[0]
    dtype = numpy_helper.to_array(target).dtype
    target.CopyFrom(numpy_helper.from_array(value.astype(dtype), site.tensor))


def apply_layer_damage(model: onnx.ModelProto, site: Site, variant: str, seed: int, other: Site | None) -> None:
    """Damage one site of `model` (in place) with a LAYER_VARIANTS entry."""
    w = read_weight(model, site)
    mats = to_mats(w.astype(np.float64), site.layout)
    ctx: dict = {"kind": site.kind}
    if variant == "copy_rows":
        if other is None:
            raise ValueError("copy_rows needs another layer of the same width")
        ctx["other"] = to_mats(read_weight(model, other).astype(np.float64), other.layout)
    rng = np.random.default_rng(stable_seed(seed, site.tensor, variant))
    damaged = LAYER_VARIANTS[variant][2](mats, rng, ctx)
    write_weight(model, site, from_mats(damaged, site.layout, w.shape))


def apply_swap(model: onnx.ModelProto, a: Site, b: Site) -> None:
    wa, wb = read_weight(model, a), read_weight(model, b)
    write_weight(model, a, wb)
    write_weight(model, b, wa)


def apply_model_quant(model: onnx.ModelProto, sites: list[Site], bits: int) -> None:
    """Round every damageable weight of the model to `bits` (per output channel, symmetric)."""
    for site in sites:
        w = read_weight(model, site)
        mats = rtn(bits)(to_mats(w.astype(np.float64), site.layout), np.random.default_rng(0), {})
        write_weight(model, site, from_mats(mats, site.layout, w.shape))
