"""Quantized weights: the matrices a quantized model really computes with, and where they come from.

A deployed model often stores int8, int4 or packed 2/4/8-bit weights together with scales and
zero points. Auditing the integers alone would measure the quantizer's grid, not the model, so
every stored format is turned back into real numbers exactly as onnxruntime does it:

- QDQ: ``DequantizeLinear`` (per-tensor, per-axis, blocked) on a stored integer or float8 tensor,
  and ``QuantizeLinear -> DequantizeLinear`` fake-quantization of float weights;
- QOperator ops (QLinearConv, QLinearMatMul, QGemm, MatMulInteger, ConvInteger,
  DynamicQuantizeMatMul, DynamicQuantizeLSTM, QAttention) whose scale and zero point are inputs of
  the op, or, for MatMulInteger/ConvInteger, are multiplied in downstream;
- onnxruntime's packed formats MatMulNBits, GatherBlockQuantized and MatMulBnb4.

This module finds which op input is a quantized weight (and which are its scales and zero
points) and plans each format as one step (a `Transform`) appended to the weight's `Source`, so the
layer machinery (shapes, views, sharing) treats a dequantized weight like any float weight. A step
carries its scale/zero-point `Source`s; transforms.apply_step loads them and runs the kernels of
kernels.py. `describe` names a source's scheme for the report.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto

from wwaudit.records import Storage
from wwaudit.errors import InputError
from wwaudit.ingest.kernels import FLOAT8_TYPES
from wwaudit.ingest.tensors import dtype_name
from wwaudit.ingest.transforms import STEP_OPS
from wwaudit.ingest.walker import DEFAULT_DOMAINS, Source, Transform, Use, WalkResult


def value_dtype(source: Source) -> int:
    """ONNX dtype of the values the op computes with: the last scale's dtype after dequantization.

    The rank-loss threshold needs the precision of the dequantized weights (float32 or float16
    scales), not that of the stored integers or float8 codes.
    """
    for step in reversed(source.transforms):
        if step.op in STEP_OPS and step.op != "quantize":
            scale = step.extra[0] if step.extra else None
            if isinstance(scale, Source) and scale.tensor.is_float and not (step.op == "rescale" and step.params[0] == "sub"):
                return scale.tensor.data_type
            if step.op != "rescale":
                return TensorProto.FLOAT
    return source.tensor.data_type


def _float_storage(data_type: int, scaled: bool) -> Storage | None:
    """Storage of values rounded to an ONNX float type (None for other types); a scale after the
    codes makes their subnormal spacing irrelevant."""
    wider: dict[int, Any] = {
        TensorProto.DOUBLE: np.float64,
        TensorProto.FLOAT: np.float32,
        TensorProto.FLOAT16: np.float16,
        TensorProto.BFLOAT16: ml_dtypes.bfloat16,
    }
    np_type = FLOAT8_TYPES.get(data_type) or wider.get(data_type)
    if np_type is None:
        return None
    info = ml_dtypes.finfo(np_type)
    return Storage(float(info.eps), 0.0 if scaled else float(info.smallest_subnormal))


def _step_rms(step: Transform) -> float:
    """Root mean square of the quantisation step (in the dequantized values' units) that one
    integer-code step applies: its scale (the codes are integers), 1 without a scale; for
    bitsandbytes' 4-bit code books the widest gap, 0.34 of the block's absmax."""
    scale = step.extra[0] if step.extra else None
    if not isinstance(scale, Source) or not scale.tensor.is_float:
        return 1.0
    values = np.asarray(scale.tensor.load(), dtype=np.float64)
    rms = float(np.sqrt(np.mean(values * values))) if values.size else 0.0
    return rms * (0.34 if step.op == "bnb4" else 1.0)


def storage_noise(source: Source) -> Storage:
    """How the values an op computes with were rounded when stored (spectra.Storage): the codes'
    float format, or for integer codes the quantisation step (the scale), plus the rounding of
    the dequantized values to the scale's dtype (value_dtype)."""
    steps = [t for t in source.transforms if t.op in STEP_OPS and not (t.op == "rescale" and t.params[0] == "sub")]
    value = _float_storage(value_dtype(source), False) or Storage(float(np.finfo(np.float32).eps))
    code = source.tensor.data_type
    for t in steps:
        if t.op == "quantize":
            code = (
                t.params[2]
                if len(t.params) > 2
                else (t.extra[1].tensor.data_type if len(t.extra) > 1 and t.extra[1] is not None else TensorProto.UINT8)
            )
    floating = _float_storage(code, scaled=bool(steps))
    if floating is not None:
        return Storage(max(floating.eps, value.eps), floating.tiny)
    return Storage(value.eps, 0.0, _step_rms(steps[-1]) if steps else 1.0)


# ---------------------------------------------------------------------------------------------
# Describing a source's scheme (LayerResult.quantization)
# ---------------------------------------------------------------------------------------------
def _granularity(scale: Source | None, axis: int, block: int) -> str:
    if scale is None:
        return "per-tensor"
    if block > 0:
        return f"blocked (axis {axis}, block {block})"
    if scale.tensor.size <= 1:
        return "per-tensor"
    return f"per-channel (axis {axis})"


def describe(source: Source) -> str | None:
    """Short scheme string, e.g. 'int8 per-channel (axis 0) QDQ' or 'MatMulNBits 4-bit block 32'; None for float weights."""
    steps = [t for t in source.transforms if t.op in STEP_OPS]
    if not steps:  # GGUF block types are dequantized on reading: no transform step, the stored type says it
        return f"GGUF {source.tensor.stored_as.upper()} blocks" if source.tensor.stored_as else None
    dtype = source.tensor.dtype
    parts = []
    for t in steps:
        if t.op == "quantize":
            out_type = (
                t.params[2]
                if len(t.params) > 2
                else (t.extra[1].tensor.data_type if len(t.extra) > 1 and t.extra[1] is not None else TensorProto.UINT8)
            )
            dtype = dtype_name(out_type)
            parts.append(f"{source.tensor.dtype} fake-quantized (QuantizeLinear)")
        elif t.op == "dequantize":
            scale = t.extra[0] if t.extra else None
            label = t.params[2] if len(t.params) > 2 else "QDQ"
            text = f"{dtype} {_granularity(scale, t.params[0], t.params[1])} {label}"
            if scale is None:
                text = f"{dtype} {label}, no weight scale in the graph: centred integers analysed"
            parts.append(text)
        elif t.op == "rescale" and t.params[0] == "mul":
            dims = list(t.extra[0].tensor.dims)
            granularity = "per-tensor" if t.extra[0].tensor.size <= 1 else f"per-channel (scale {dims})"
            centred = any(s.op == "rescale" and s.params[0] == "sub" for s in steps)
            parts.append(f"{dtype} {granularity} Cast" + (" → Sub" if centred else "") + " → Mul")
        elif t.op == "rescale" and not any(s.op == "rescale" and s.params[0] == "mul" for s in steps):
            parts.append(f"{dtype} Cast → Sub, no scale in the graph: centred integers analysed")
        elif t.op == "nbits":
            k, n, bits, block = t.params
            extras = []
            if len(t.extra) > 1 and t.extra[1] is not None:
                extras.append("zero points")
            if len(t.extra) > 2 and t.extra[2] is not None:
                extras.append("g_idx")
            parts.append(f"MatMulNBits {bits}-bit block {block}" + (f" ({', '.join(extras)})" if extras else ""))
        elif t.op == "bnb4":
            parts.append(f"MatMulBnb4 {'NF4' if t.params[3] == 1 else 'FP4'} block {t.params[2]}")
        elif t.op == "block_gather":
            bits, block, axis, _packed, _type = t.params
            width = dtype if source.tensor.data_type != TensorProto.UINT8 else f"{bits}-bit"
            parts.append(f"GatherBlockQuantized {width} block {block or 'whole axis'} (axis {axis})")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Which op input is a quantized weight, and the step that dequantizes it
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Slot:
    """A weight slot of a quantized op: where its scale/zero point are and how the float op sees it."""

    scale: int | None  # input slot of the scale (None: applied downstream)
    zero_point: int | None
    float_op: str  # the float op whose layout the dequantized weight has
    float_slot: int


_MS = "com.microsoft"


# (domain, op) -> {weight slot: _Slot}; the axis of per-channel parameters is derived in `_axis`.
WEIGHT_SLOTS: dict[tuple[str, str], dict[int, _Slot]] = {
    ("", "QLinearConv"): {3: _Slot(4, 5, "Conv", 1)},
    (_MS, "QLinearConv"): {3: _Slot(4, 5, "Conv", 1)},
    ("", "ConvInteger"): {1: _Slot(None, 3, "Conv", 1)},
    ("", "QLinearMatMul"): {3: _Slot(4, 5, "MatMul", 1), 0: _Slot(1, 2, "MatMul", 0)},
    ("", "MatMulInteger"): {1: _Slot(None, 3, "MatMul", 1), 0: _Slot(None, 2, "MatMul", 0)},
    (_MS, "QGemm"): {3: _Slot(4, 5, "Gemm", 1), 0: _Slot(1, 2, "Gemm", 0)},
    (_MS, "DynamicQuantizeMatMul"): {1: _Slot(2, 3, "MatMul", 1)},
    (_MS, "QAttention"): {1: _Slot(4, 7, "Attention", 1)},
    (_MS, "DynamicQuantizeLSTM"): {1: _Slot(8, 9, "LSTM", 1), 2: _Slot(10, 11, "LSTM", 2)},
    (_MS, "MatMulNBits"): {1: _Slot(2, 3, "MatMulNBits", 1)},
    (_MS, "MatMulBnb4"): {1: _Slot(2, None, "MatMulBnb4", 1)},
    (_MS, "GatherBlockQuantized"): {0: _Slot(2, 3, "Gather", 0)},
}


# Inputs of quantized ops (and of DequantizeLinear/QuantizeLinear) that hold scales, zero points or g_idx.
PARAM_SLOTS: dict[str, set[int]] = {
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "ConvInteger": {2, 3},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "MatMulInteger": {2, 3},
    "QGemm": {1, 2, 4, 5, 7, 8},
    "DynamicQuantizeMatMul": {2, 3},
    "QAttention": {3, 4, 6, 7},
    "DynamicQuantizeLSTM": {8, 9, 10, 11},
    "MatMulNBits": {2, 3, 4},
    "MatMulBnb4": {2},
    "GatherBlockQuantized": {2, 3},
    "DequantizeLinear": {1, 2},
    "QuantizeLinear": {1, 2},
}


# Ops the weight scale of MatMulInteger/ConvInteger passes on its way to the output multiplication.
_DOWNSTREAM_PASS = {"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose"}


class QuantIndex:
    """Per-walk lookups: the sources at each op input, and who produces/consumes each tensor name."""

    def __init__(self, walk: WalkResult) -> None:
        self.slots: dict[int, dict[int, Source]] = defaultdict(dict)
        # Tensors that some dequantization step reads as its scale or zero point.
        self.param_keys: set[str] = set()
        for use in walk.uses:
            self.slots[use.position][use.slot] = use.source
            for step in use.source.transforms:
                if step.op in STEP_OPS:
                    self.param_keys.update(src.tensor.key for src in step.extra if isinstance(src, Source))
        self.consumers: dict[tuple[str, str], list[tuple[int, onnx.NodeProto]]] = defaultdict(list)
        self.producers: dict[tuple[str, str], tuple[int, onnx.NodeProto]] = {}
        for scope, position, node in walk.nodes:
            for name in node.input:
                if name:
                    self.consumers[(scope, name)].append((position, node))
            for name in node.output:
                if name:
                    self.producers[(scope, name)] = (position, node)
        self.by_name: dict[tuple[str, str], Source] = {(t.scope, t.name): Source(t) for t in walk.tensors.values()}
        for use in walk.uses:  # weight scales multiplied in after MatMulInteger/ConvInteger are parameters too
            slot = weight_slot(use, use.node.domain if use.node.domain not in DEFAULT_DOMAINS else "")
            found = self.downstream_scale(use, None) if slot is not None and slot.scale is None else None
            if found is not None:
                self.param_keys.add(found.tensor.key)

    def source(self, position: int, slot: int | None) -> Source | None:
        return None if slot is None else self.slots.get(position, {}).get(slot)

    def downstream_scale(self, use: Use, channels: int | None) -> Source | None:
        """The weight scale multiplied into an integer op's output (quantize_dynamic's Cast → Mul)."""
        frontier = [(use.scope, out) for out in use.node.output[:1]]
        candidates: list[Source] = []
        seen: set[tuple[str, str]] = set()
        while frontier:
            key = frontier.pop()
            if key in seen:
                continue
            seen.add(key)
            for position, node in self.consumers.get(key, []):
                if node.op_type in _DOWNSTREAM_PASS:
                    frontier.extend((key[0], o) for o in node.output[:1])
                elif node.op_type == "Mul":
                    candidates.extend(self._mul_factors(key[0], position, node, skip=key[1]))
        good = [c for c in candidates if c.tensor.is_float and (channels is None or c.tensor.size in (1, channels))]
        unique = {id(c.tensor): c for c in good}
        return next(iter(unique.values())) if len(unique) == 1 else None

    def downstream_dequantize(self, use: Use, dims: tuple[int, ...]) -> Source | None:
        """An integer table read by a plain Gather and dequantized after it (quantize_dynamic's embeddings)."""
        for position, node in self.consumers.get((use.scope, use.node.output[0] if use.node.output else ""), []):
            if node.op_type != "DequantizeLinear" or node.input[0] != use.node.output[0]:
                continue
            scale, zero_point = self.source(position, 1), self.source(position, 2)
            if scale is None:
                return None
            if scale.tensor.size == 1:
                axis = 0
            elif len(dims) == 2 and scale.tensor.size == dims[1]:
                axis = 1  # per-feature scale on the gathered rows' last axis
            else:
                raise InputError("DequantizeLinear after Gather has a scale along the gathered axis")
            step = Transform("dequantize", (axis, 0, "Gather + DequantizeLinear"), extra=(scale, zero_point))
            return use.source.then(step)
        return None

    def _mul_factors(self, scope: str, position: int, node: onnx.NodeProto, skip: str) -> list[Source]:
        """Constant factors of a Mul, one Mul deep (the weight scale is often pre-multiplied by the input's)."""
        found = []
        for slot, name in enumerate(node.input):
            if name == skip:
                continue
            src = self.source(position, slot)
            if src is not None:
                found.append(src)
                continue
            producer = self.producers.get((scope, name))
            if producer is not None and producer[1].op_type == "Mul":
                found.extend(
                    self.source(producer[0], s) for s in range(len(producer[1].input)) if self.source(producer[0], s) is not None
                )
        return found

    def named_scale(self, use: Use) -> Source | None:
        """onnxruntime's naming: weight `W_quantized` has its scale in `W_scale`."""
        tensor = use.source.tensor
        base = tensor.name[: -len("_quantized")] if tensor.name.endswith("_quantized") else tensor.name
        for name in (f"{base}_scale", f"{tensor.name}_scale"):
            src = self.by_name.get((tensor.scope, name))
            if src is not None and src.tensor.is_float:
                return src
        return None


def _axis(spec: _Slot, rank: int, attrs: dict) -> int:
    """Axis of per-channel scales: the output-feature axis of the stored weight."""
    op, slot = spec.float_op, spec.float_slot
    if op in ("Conv", "LSTM"):
        return 0
    if op == "Gemm":
        trans = attrs.get("transB" if slot == 1 else "transA", 0)
        return (0 if trans else 1) if slot == 1 else (1 if trans else 0)
    if op in ("MatMul", "Attention"):
        return rank - 1 if slot == 1 else rank - 2
    return 0


def _required(attrs: dict, name: str, op: str) -> int:
    if name not in attrs:
        raise InputError(f"{op} has no '{name}' attribute")
    return int(attrs[name])


def is_param(use: Use, domain: str, index: QuantIndex) -> bool:
    """Whether this input holds a scale, zero point or block index of a quantized op or dequantization."""
    if domain in ("", _MS) and use.slot in PARAM_SLOTS.get(use.node.op_type, ()):
        return True
    return use.source.tensor.key in index.param_keys


def weight_slot(use: Use, domain: str) -> _Slot | None:
    """The quantized-weight description of this op input, None when it is not one."""
    return WEIGHT_SLOTS.get((domain, use.node.op_type), {}).get(use.slot)


def plan_weight(use: Use, domain: str, dims: tuple[int, ...], index: QuantIndex) -> tuple[Source, list[str]] | None:
    """The dequantized source of a quantized weight use (with notes), None when the use is not one."""
    slot = weight_slot(use, domain)
    if slot is not None:
        return quantized_source(use, slot, dims, index)
    if domain == "" and use.node.op_type == "Gather" and use.slot == 0 and use.source.tensor.is_integer:
        source = index.downstream_dequantize(use, dims)
        return (source, []) if source is not None else None
    return None


def quantized_source(use: Use, spec: _Slot, dims: tuple[int, ...], index: QuantIndex) -> tuple[Source, list[str]]:
    """The weight's source with the dequantization step appended (and notes for the layer)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in use.node.attribute}
    source = use.source
    scale = index.source(use.position, spec.scale)
    zero_point = index.source(use.position, spec.zero_point)
    op = use.node.op_type
    notes: list[str] = []
    if op == "MatMulNBits":
        if int(attrs.get("weight_prepacked", 0)):
            raise InputError("MatMulNBits weights are pre-packed for one backend: layout not portable")
        g_idx = index.source(use.position, 4)
        params = (
            _required(attrs, "K", op),
            _required(attrs, "N", op),
            int(attrs.get("bits", 4)),
            _required(attrs, "block_size", op),
        )
        if min(params) <= 0 or params[2] > 8:
            raise InputError(
                f"MatMulNBits attributes K={params[0]} N={params[1]} bits={params[2]} block_size={params[3]} are invalid"
            )
        return source.then(Transform("nbits", params, extra=(scale, zero_point, g_idx))), notes
    if op == "MatMulBnb4":
        params = (
            _required(attrs, "K", op),
            _required(attrs, "N", op),
            _required(attrs, "block_size", op),
            int(attrs.get("quant_type", 1)),
        )
        if min(params[:3]) <= 0:
            raise InputError(f"MatMulBnb4 attributes K={params[0]} N={params[1]} block_size={params[2]} are invalid")
        return source.then(Transform("bnb4", params, extra=(scale,))), notes
    if op == "GatherBlockQuantized":
        bits = int(attrs.get("bits", 4))
        if not 1 <= bits <= 8 or int(attrs.get("block_size", 128)) < 0:
            raise InputError(f"GatherBlockQuantized bits={bits} block_size={attrs.get('block_size')} are invalid")
        packed = source.tensor.data_type == TensorProto.UINT8 and bits < 8
        params = (bits, int(attrs.get("block_size", 128)), int(attrs.get("quantize_axis", 1)), packed, source.tensor.data_type)
        return source.then(Transform("block_gather", params, extra=(scale, zero_point))), notes
    axis = _axis(spec, len(dims), attrs)
    if spec.scale is None:  # MatMulInteger / ConvInteger: the scale is applied to the op's output
        channels = dims[axis] if dims else 1
        scale = index.downstream_scale(use, channels) or index.named_scale(use)
        if scale is None:
            notes.append(f"no weight scale found for this {op}: the centred integer matrix is analysed")
        elif scale.tensor.size > 1:
            scale = scale.then(Transform("reshape", ((-1,), 0)))
        if scale is not None:
            notes.append(f"weight scale '{scale.tensor.name}' found in the graph")
    if op == "DynamicQuantizeLSTM":
        # W [D, I, 4H] / R [D, H, 4H] with scale [D] (per direction) or [D, 4H] (per gate row).
        if scale is not None and len(scale.tensor.dims) == 2 and len(dims) == 3:
            shape = (dims[0], 1, dims[2])
            scale = scale.then(Transform("reshape", (shape, 0)))
            if zero_point is not None and zero_point.tensor.size > 1:
                zero_point = zero_point.then(Transform("reshape", (shape, 0)))
            axis = 0
        step = Transform("dequantize", (axis, 0, op), extra=(scale, zero_point))
        return source.then(step).then(Transform("transpose", (0, 2, 1))), notes
    return source.then(Transform("dequantize", (axis, 0, op), extra=(scale, zero_point))), notes
