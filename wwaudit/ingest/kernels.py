"""Dequantization kernels: stored integers, float8 codes and packed bits back to real numbers.

Pure numpy on arrays, exactly as onnxruntime computes them: the product (q − zero point)·scale is
rounded once to the scale's dtype, which reproduces onnxruntime's float32 (or float16) arithmetic
bit for bit; integers stay int32 and float32 products are formed in float32 directly, so a layer
costs about twice its float32 size in memory. quant.py decides which kernel a weight needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
from onnx import TensorProto

from wwaudit.errors import InputError
from wwaudit.ingest.tensors import dtype_name


# bitsandbytes' 4-bit code books as onnxruntime's MatMulBnb4 kernel stores them (quant_type 1 / 0).
NF4_TABLE = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=np.float32,
)


FP4_TABLE = np.array(
    [
        0.0,
        0.005208333333,
        0.66666667,
        1.0,
        0.33333333,
        0.5,
        0.16666667,
        0.25,
        -0.0,
        -0.005208333333,
        -0.66666667,
        -1.0,
        -0.33333333,
        -0.5,
        -0.16666667,
        -0.25,
    ],
    dtype=np.float32,
)


_INT_RANGES: dict[int, tuple[int, int]] = {
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT8: (0, 255),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT4: (-8, 7),
    TensorProto.UINT4: (0, 15),
    TensorProto.INT32: (-(2**31), 2**31 - 1),
}


FLOAT8_TYPES: dict[int, Any] = {
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


# MatMulNBits weights are dequantized in row chunks of about this many values (see dequantize_nbits).
NBITS_CHUNK = 1 << 22


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
    if out_type in FLOAT8_TYPES:
        target = FLOAT8_TYPES[out_type]
        limit = float(ml_dtypes.finfo(target).max)
        return np.clip(ratio, -limit, limit).astype(target)
    if out_type not in _INT_RANGES:
        raise InputError(f"QuantizeLinear to {dtype_name(out_type)} is not supported")
    lo, hi = _INT_RANGES[out_type]
    q = np.rint(ratio).astype(np.int64)
    if zero_point is not None and zero_point.size:
        q = q + _broadcast_param(_values(zero_point), shape, axis, block_size, "zero point")
    return np.clip(q, lo, hi)


@dataclass(frozen=True)
class NBits:
    """A MatMulNBits weight's checked parts: codes [N, blocks, blob], scales and zero points
    [N, blocks], the act-order block index (or None); `nbits_block` dequantizes any block of it."""

    rows: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    index: np.ndarray | None
    k: int
    bits: int
    block_size: int

    @property
    def dtype(self) -> np.dtype:
        return _out_dtype(self.scales)


def nbits_parts(
    packed: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None,
    g_idx: np.ndarray | None,
    k: int,
    n: int,
    bits: int,
    block_size: int,
) -> NBits:
    """Check a MatMulNBits weight's sizes against its attributes (see dequantize_nbits)."""
    if block_size <= 0 or k <= 0 or n <= 0 or not 1 <= bits <= 8:
        raise InputError(f"MatMulNBits attributes K={k} N={n} bits={bits} block_size={block_size} are invalid")
    blocks = -(-k // block_size)
    blob = block_size * bits // 8
    if block_size * bits % 8:
        raise InputError(f"MatMulNBits block_size={block_size} x bits={bits} does not fill whole bytes")
    if packed.size != n * blocks * blob:
        raise InputError(
            f"MatMulNBits B holds {packed.size} bytes, K={k} N={n} bits={bits} block {block_size} need {n * blocks * blob}"
        )
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
    index = None
    if g_idx is not None and g_idx.size:
        index = np.asarray(g_idx, dtype=np.int64).reshape(-1)
        if index.size != k or index.min() < 0 or index.max() >= blocks:
            raise InputError("MatMulNBits g_idx does not map every input feature to a block")
    _out_dtype(s)
    return NBits(packed.reshape(n, blocks, blob), s, z, index, k, bits, block_size)


def nbits_block(w: NBits, rows: slice, cols: slice) -> np.ndarray:
    """W[rows, cols] of a MatMulNBits weight, dequantized; only the blocks that hold `cols` are unpacked.

    Element for element the values dequantize_nbits gives: each is (q − zp)·s rounded once.
    """
    bs = w.block_size
    c0, c1 = cols.start or 0, w.k if cols.stop is None else cols.stop
    if w.index is not None:  # act order: a column's block is g_idx's, unpack the rows whole
        q = unpack_bits(w.rows[rows], w.bits).reshape(-1, w.rows.shape[1] * bs)[:, c0:c1]
        idx = w.index[c0:c1]
        return _scaled(q - w.zeros[rows][:, idx], w.scales[rows][:, idx], w.dtype)
    b0, b1 = c0 // bs, -(-c1 // bs)
    q = unpack_bits(w.rows[rows, b0:b1], w.bits)  # (rows, blocks, block)
    scales = w.scales[rows, b0:b1, None]
    if q.dtype == np.int32 and w.zeros.dtype == np.int32 and w.dtype == np.float32:
        # _scaled's int32 · float32 case in place: one int32 and one float32 array per block
        np.subtract(q, w.zeros[rows, b0:b1, None], out=q)
        block = q.astype(np.float32)
        del q
        block *= scales.astype(np.float32)
    else:
        block = _scaled(q - w.zeros[rows, b0:b1, None], scales, w.dtype)
    return block.reshape(block.shape[0], -1)[:, c0 - b0 * bs : c1 - b0 * bs]


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
    parts = nbits_parts(packed, scales, zero_points, g_idx, k, n, bits, block_size)
    # Row chunks into one output array: the int32 codes, their differences and float copies of a
    # 32000 x 4096 LM head would otherwise be four 0.5 GB temporaries beside the result.
    w = np.empty((n, k), dtype=parts.dtype)
    step = max(1, NBITS_CHUNK // max(1, parts.rows.shape[1] * block_size))
    for start in range(0, n, step):
        part = slice(start, start + step)
        w[part] = nbits_block(parts, part, slice(0, k))
    return w


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
