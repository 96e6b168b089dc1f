"""Dequantization of low-precision weights: the matrices a quantized model really computes with.

A deployed model often stores int8, int4 or packed 2/4/8-bit weights together with scales and
zero points. Auditing the integers alone would measure the quantizer's grid, not the model, so
every stored format is turned back into real numbers exactly as onnxruntime does it:

- QDQ: ``DequantizeLinear`` (per-tensor, per-axis, blocked) on a stored integer or float8 tensor,
  and ``QuantizeLinear -> DequantizeLinear`` fake-quantization of float weights;
- QOperator ops (QLinearConv, QLinearMatMul, QGemm, MatMulInteger, ConvInteger,
  DynamicQuantizeMatMul, DynamicQuantizeLSTM, QAttention) whose scale and zero point are inputs of
  the op, or, for MatMulInteger/ConvInteger, are multiplied in downstream;
- onnxruntime's packed formats MatMulNBits, GatherBlockQuantized and MatMulBnb4.

Each format becomes one step (a `Transform`) appended to the weight's `Source`, so the layer
machinery (shapes, views, sharing) treats a dequantized weight like any float weight. A step
carries its scale/zero-point `Source`s; `apply_step` loads them through the caller's loader.
The product (q − zero point)·scale is rounded once to the scale's dtype, which reproduces
onnxruntime's float32 (or float16) arithmetic bit for bit; integers stay int32 and float32
products are formed in float32 directly, so a layer costs about twice its float32 size in memory.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Callable

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto

from wwaudit.ingest.walker import DEFAULT_DOMAINS, Source, Transform, Use, WalkResult
from wwaudit.ingest.tensors import dtype_name
from wwaudit.errors import InputError

# Transform ops this module applies (the graph walker emits "dequantize", "quantize" and "rescale").
STEP_OPS = frozenset({"dequantize", "quantize", "rescale", "nbits", "block_gather", "bnb4"})
# Of those, the ones whose output shape differs from their input's.
RESHAPING_STEPS = frozenset({"nbits", "block_gather", "bnb4"})

Loader = Callable[[Source], np.ndarray]

# bitsandbytes' 4-bit code books as onnxruntime's MatMulBnb4 kernel stores them (quant_type 1 / 0).
NF4_TABLE = np.array(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
     -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
     0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
     0.7229568362236023, 1.0],
    dtype=np.float32,
)
FP4_TABLE = np.array(
    [0.0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25,
     -0.0, -0.005208333333, -0.66666667, -1.0, -0.33333333, -0.5, -0.16666667, -0.25],
    dtype=np.float32,
)

_INT_RANGES = {
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT8: (0, 255),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT4: (-8, 7),
    TensorProto.UINT4: (0, 15),
    TensorProto.INT32: (-(2**31), 2**31 - 1),
}
_FLOAT8 = {
    TensorProto.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn,
    TensorProto.FLOAT8E4M3FNUZ: ml_dtypes.float8_e4m3fnuz,
    TensorProto.FLOAT8E5M2: ml_dtypes.float8_e5m2,
    TensorProto.FLOAT8E5M2FNUZ: ml_dtypes.float8_e5m2fnuz,
}


# ---------------------------------------------------------------------------------------------
# Element arithmetic
# ---------------------------------------------------------------------------------------------
def _values(arr: np.ndarray) -> np.ndarray:
    """Exact values of stored integers (int4 included) or low-precision floats, as int32/int64/float64."""
    arr = np.asarray(arr)
    name = arr.dtype.name
    if arr.dtype.kind in "iu" and arr.dtype.itemsize >= 4:
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu" or name in ("int4", "uint4", "int2", "uint2"):
        return arr.astype(np.int32)
    if arr.dtype.kind == "f" or name.startswith(("bfloat16", "float8", "float4")):
        return arr.astype(np.float64)
    raise InputError(f"cannot dequantize values of dtype {arr.dtype}")


def _out_dtype(scale: np.ndarray) -> np.dtype:
    """The dequantized weights have the scale's dtype (float32, float16 or bfloat16)."""
    if scale.dtype.kind == "f" or scale.dtype.name == "bfloat16":
        return scale.dtype
    raise InputError(f"quantization scale has non-float dtype {scale.dtype}")


def _scaled(diff: np.ndarray, scale: np.ndarray, out: np.dtype) -> np.ndarray:
    """diff·scale rounded once to `out`.

    int32 differences come from types of at most 16 bits (|diff| < 2^17): exact in float32, so
    float32 multiplication is already the correctly rounded product. Float differences (float8
    codes, float zero points) and float16/bfloat16 scales go through float64, where the product
    is exact, and are rounded once to the scale's dtype.
    """
    # a scale near the dtype's maximum overflows to inf: the analysis reports it (NaN/Inf weights),
    # numpy need not warn on the user's terminal
    with np.errstate(over="ignore", invalid="ignore"):
        if out == np.float32 and diff.dtype == np.int32:
            return diff.astype(np.float32) * scale.astype(np.float32)
        return (diff * scale.astype(np.float64)).astype(out)


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned `bits`-wide values packed along the last axis of a uint8 array, lowest bits first."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if bits == 8:
        return packed.astype(np.int32)
    if bits in (1, 2, 4):
        shifts = np.arange(0, 8, bits, dtype=np.uint8)
        vals = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
        return vals.reshape(packed.shape[:-1] + (-1,)).astype(np.int32)
    if not 1 <= bits <= 8:
        raise InputError(f"cannot unpack {bits}-bit values")
    stream = np.unpackbits(packed, axis=-1, bitorder="little")
    count = stream.shape[-1] // bits
    stream = stream[..., : count * bits].reshape(packed.shape[:-1] + (count, bits)).astype(np.int32)
    return stream @ (np.int32(1) << np.arange(bits, dtype=np.int32))


def _expand_blocks(param: np.ndarray, axis: int, block: int, length: int) -> np.ndarray:
    """Repeat per-block parameters `block` times along `axis` and crop to `length` (last block may be short).

    A block longer than the axis is one block: repeating it `length` times is enough (and keeps
    a hostile block_size from allocating more than the weight itself).
    """
    return np.take(np.repeat(param, min(block, length), axis=axis), np.arange(length), axis=axis)


def _broadcast_param(param: np.ndarray, shape: tuple[int, ...], axis: int, block: int, what: str) -> np.ndarray:
    """Shape a scale or zero point to broadcast against data of `shape` (ONNX DequantizeLinear rules)."""
    rank = len(shape)
    if param.size == 1 and block == 0:
        return param.reshape(())
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < max(rank, 1):
        raise InputError(f"quantization axis {axis} does not fit a tensor of shape {list(shape)}")
    if block == 0 and param.ndim == 1:
        if param.shape[0] != shape[axis]:
            raise InputError(f"{what} of length {param.shape[0]} does not match axis {axis} of shape {list(shape)}")
        view = [1] * rank
        view[axis] = -1
        return param.reshape(view)
    if param.ndim != rank:
        raise InputError(f"{what} of shape {list(param.shape)} does not fit a tensor of shape {list(shape)}")
    if block > 0:
        if param.shape[axis] != -(-shape[axis] // block):
            raise InputError(
                f"{what} has {param.shape[axis]} blocks on axis {axis}, shape {list(shape)} with block {block} needs "
                f"{-(-shape[axis] // block)}"
            )
        param = _expand_blocks(param, axis, block, shape[axis])
    if any(p not in (1, s) for p, s in zip(param.shape, shape)):
        raise InputError(f"{what} of shape {list(param.shape)} does not broadcast to {list(shape)}")
    return param


def dequantize_linear(
    x: np.ndarray, scale: np.ndarray | None, zero_point: np.ndarray | None, axis: int = 1, block_size: int = 0
) -> np.ndarray:
    """ONNX DequantizeLinear, y = (x − zero_point)·scale; without a scale, the centred integers (float64)."""
    shape = tuple(x.shape)
    diff = _values(x)
    if zero_point is not None and zero_point.size:
        diff = diff - _broadcast_param(_values(zero_point), shape, axis, block_size, "zero point")
    if scale is None:
        return diff.astype(np.float64)
    s = _broadcast_param(np.asarray(scale), shape, axis, block_size, "scale")
    return _scaled(diff, s, _out_dtype(np.asarray(scale)))


def rescale(x: np.ndarray, const: np.ndarray, op: str) -> np.ndarray:
    """Weight-only quantization in plain ops: Cast(q) − zero point, or × scale (numpy broadcasting, as ONNX)."""
    const = np.asarray(const)
    if const.ndim > x.ndim or any(c not in (1, d) for c, d in zip(const.shape[::-1], x.shape[::-1])):
        raise InputError(f"{op} constant of shape {list(const.shape)} does not broadcast to the weight {list(x.shape)}")
    if op == "sub":
        diff = _values(x) - _values(const)
        # ONNX Sub needs equal input types: an integer constant means the Sub runs before the Cast,
        # in that integer type, where the difference wraps around as onnxruntime computes it.
        return _values(diff.astype(const.dtype)) if const.dtype.kind in "iu" else diff
    return _scaled(_values(x), const, _out_dtype(const))


def quantize_linear(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block_size: int, out_type: int
) -> np.ndarray:
    """ONNX QuantizeLinear (fake-quantized float weights): round half to even, saturate to the type."""
    shape = tuple(x.shape)
    s = _broadcast_param(np.asarray(scale), shape, axis, block_size, "scale")
    ratio = np.asarray(x, dtype=np.float32) / s.astype(np.float32)
    if out_type in _FLOAT8:
        target = _FLOAT8[out_type]
        limit = float(ml_dtypes.finfo(target).max)
        return np.clip(ratio, -limit, limit).astype(target)
    if out_type not in _INT_RANGES:
        raise InputError(f"QuantizeLinear to {dtype_name(out_type)} is not supported")
    lo, hi = _INT_RANGES[out_type]
    q = np.rint(ratio).astype(np.int64)
    if zero_point is not None and zero_point.size:
        q = q + _broadcast_param(_values(zero_point), shape, axis, block_size, "zero point")
    return np.clip(q, lo, hi)


def dequantize_nbits(
    packed: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None,
    g_idx: np.ndarray | None,
    k: int,
    n: int,
    bits: int,
    block_size: int,
) -> np.ndarray:
    """com.microsoft MatMulNBits: B [N, ⌈K/bs⌉, bs·bits/8] → W (N × K), rows = outputs.

    W[n, k] = (q[n, k] − zp[n, b])·s[n, b] with b = k // bs (or g_idx[k] for act-order models);
    zero points are packed like B, or floats, or default to 2^(bits−1); padding beyond K is cropped.
    """
    if block_size <= 0 or k <= 0 or n <= 0 or not 1 <= bits <= 8:
        raise InputError(f"MatMulNBits attributes K={k} N={n} bits={bits} block_size={block_size} are invalid")
    blocks = -(-k // block_size)
    blob = block_size * bits // 8
    if packed.size != n * blocks * blob:
        raise InputError(f"MatMulNBits B holds {packed.size} bytes, K={k} N={n} bits={bits} block {block_size} need {n * blocks * blob}")
    q = unpack_bits(packed.reshape(n, blocks, blob), bits)  # (N, blocks, block)
    scales = np.asarray(scales)
    if scales.size != n * blocks:
        raise InputError(f"MatMulNBits scales hold {scales.size} values, {n}x{blocks} needed")
    s = scales.reshape(n, blocks)
    if zero_points is None or zero_points.size == 0:
        z = np.full((n, blocks), 1 << (bits - 1), dtype=np.int32)
    elif zero_points.dtype == np.uint8:
        z = unpack_bits(zero_points.reshape(n, -1), bits)[:, :blocks]
        if z.shape[1] != blocks:
            raise InputError(f"MatMulNBits zero points hold {zero_points.size} bytes, too few for {n}x{blocks} blocks")
    else:
        if zero_points.size != n * blocks:
            raise InputError(f"MatMulNBits zero points hold {zero_points.size} values, {n}x{blocks} needed")
        z = _values(zero_points).reshape(n, blocks)
    if g_idx is not None and g_idx.size:
        index = np.asarray(g_idx, dtype=np.int64).reshape(-1)
        if index.size != k or index.min() < 0 or index.max() >= blocks:
            raise InputError("MatMulNBits g_idx does not map every input feature to a block")
        q = q.reshape(n, -1)[:, :k]
        return _scaled(q - z[:, index], s[:, index], _out_dtype(s))
    # Contiguous blocks: broadcast each block's parameters over it, then crop the padding.
    w = _scaled(q - z[:, :, None], s[:, :, None], _out_dtype(s))
    return w.reshape(n, -1)[:, :k]


def dequantize_bnb4(packed: np.ndarray, absmax: np.ndarray, k: int, n: int, block_size: int, quant_type: int) -> np.ndarray:
    """com.microsoft MatMulBnb4: NF4/FP4 codes (high nibble first) × per-block absmax → W (N × K)."""
    count = n * k
    if block_size <= 0 or packed.size != (count + 1) // 2 or absmax.size != -(-count // block_size):
        raise InputError(f"MatMulBnb4 B/absmax sizes do not match K={k} N={n} block_size={block_size}")
    table = NF4_TABLE if quant_type == 1 else FP4_TABLE
    flat = np.asarray(packed, dtype=np.uint8).reshape(-1)
    codes = np.stack([flat >> 4, flat & 0x0F], axis=-1).reshape(-1)[:count]
    scale = np.asarray(absmax).reshape(-1)
    out = _out_dtype(scale)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported by the analysis
        w = table[codes].astype(np.float64) * scale.astype(np.float64)[np.arange(count) // block_size]
        return w.astype(out).reshape(n, k)


def dequantize_block_gather(
    data: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None,
    bits: int,
    block_size: int,
    quantize_axis: int,
    data_type: int,
) -> np.ndarray:
    """com.microsoft GatherBlockQuantized's table: (data − zp)·scale, blocks along `quantize_axis`.

    uint8 data with bits < 8 is packed along the last axis (low bits first); zero points default
    to 0 for int4/uint4 and 2^(bits−1) for uint8; float8/float4 tables have no zero point.
    """
    packed = data_type == TensorProto.UINT8 and bits < 8
    q = unpack_bits(data, bits) if packed else _values(data)
    shape = q.shape
    axis = quantize_axis + len(shape) if quantize_axis < 0 else quantize_axis
    if not 0 <= axis < len(shape):
        raise InputError(f"GatherBlockQuantized quantize_axis {quantize_axis} does not fit shape {list(shape)}")
    block = block_size if block_size > 0 else shape[axis]
    scales = np.asarray(scales)
    if scales.ndim != len(shape):
        raise InputError(f"GatherBlockQuantized scales of shape {list(scales.shape)} do not fit data {list(shape)}")
    if zero_points is not None and zero_points.size:
        z = unpack_bits(zero_points, bits) if packed else _values(zero_points)
        z = z[tuple(slice(0, d) for d in scales.shape)]
        q = q - _broadcast_param(z, shape, axis, block, "zero point")
    elif data_type == TensorProto.UINT8:
        q = q - (1 << (bits - 1))
    s = _broadcast_param(scales, shape, axis, block, "scale")
    return _scaled(q, s, _out_dtype(scales))


# ---------------------------------------------------------------------------------------------
# Steps: shapes and application
# ---------------------------------------------------------------------------------------------
def step_dims(dims: tuple[int, ...], step: Transform) -> tuple[int, ...]:
    """Shape after a quantization step (only the packed formats change it)."""
    if step.op in ("nbits", "bnb4"):
        return (step.params[1], step.params[0])  # (N, K)
    if step.op == "block_gather":
        bits, _block, _axis, packed, _type = step.params
        return dims[:-1] + (dims[-1] * 8 // bits,) if packed else dims
    return dims


def apply_step(arr: np.ndarray, step: Transform, load: Loader) -> np.ndarray:
    """Apply one quantization step to the array the previous steps produced.

    Shapes come from an untrusted file: numpy's complaints about them become InputError, so a
    malformed quantized weight is one layer error, never a crash.
    """
    try:
        return _apply_step(arr, step, load)
    except (ValueError, IndexError) as exc:
        raise InputError(f"cannot dequantize ({step.op}): {exc}") from None


def _apply_step(arr: np.ndarray, step: Transform, load: Loader) -> np.ndarray:
    def param(i: int) -> np.ndarray | None:
        src = step.extra[i] if len(step.extra) > i else None
        return None if src is None else np.asarray(load(src))

    if step.op == "dequantize":
        return dequantize_linear(arr, param(0), param(1), step.params[0], step.params[1])
    if step.op == "quantize":
        zp = param(1)
        out_type = step.params[2] if len(step.params) > 2 else (step.extra[1].tensor.data_type if zp is not None else TensorProto.UINT8)
        scale = param(0)
        if scale is None:
            raise InputError("QuantizeLinear without a constant scale")
        return quantize_linear(arr, scale, zp, step.params[0], step.params[1], out_type)
    if step.op == "rescale":
        return rescale(arr, param(0), step.params[0])
    if step.op == "nbits":
        k, n, bits, block = step.params
        return dequantize_nbits(arr, param(0), param(1), param(2), k, n, bits, block)
    if step.op == "bnb4":
        k, n, block, quant_type = step.params
        return dequantize_bnb4(arr, param(0), k, n, block, quant_type)
    if step.op == "block_gather":
        bits, block, axis, _packed, data_type = step.params
        return dequantize_block_gather(arr, param(0), param(1), bits, block, axis, data_type)
    raise ValueError(f"not a quantization step: {step.op}")


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
    if not steps:
        return None
    dtype = source.tensor.dtype
    parts = []
    for t in steps:
        if t.op == "quantize":
            out_type = t.params[2] if len(t.params) > 2 else (
                t.extra[1].tensor.data_type if len(t.extra) > 1 and t.extra[1] is not None else TensorProto.UINT8
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
                found.extend(self.source(producer[0], s) for s in range(len(producer[1].input)) if self.source(producer[0], s) is not None)
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
        params = (_required(attrs, "K", op), _required(attrs, "N", op), int(attrs.get("bits", 4)), _required(attrs, "block_size", op))
        if min(params) <= 0 or params[2] > 8:
            raise InputError(f"MatMulNBits attributes K={params[0]} N={params[1]} bits={params[2]} block_size={params[3]} are invalid")
        return source.then(Transform("nbits", params, extra=(scale, zero_point, g_idx))), notes
    if op == "MatMulBnb4":
        params = (_required(attrs, "K", op), _required(attrs, "N", op), _required(attrs, "block_size", op), int(attrs.get("quant_type", 1)))
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
