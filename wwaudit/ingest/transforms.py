"""Transform steps between a stored tensor and the op input: their shapes, and applying them.

The graph walker records each step (slice, concat, transpose, reshape, squeeze, unsqueeze,
flatten, and the quantization steps of quant.py) on the weight's `Source`; `transformed_dims`
gives the shape the op sees without reading data, `materialise` reads the tensor and applies them.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from onnx import TensorProto

from wwaudit.errors import InputError
from wwaudit.ingest.kernels import (
    NBits,
    nbits_block,
    nbits_parts,
    dequantize_block_gather,
    dequantize_bnb4,
    dequantize_linear,
    dequantize_nbits,
    quantize_linear,
    rescale,
)
from wwaudit.ingest.tensors import numpy_dtype
from wwaudit.ingest.walker import Source, Transform
from wwaudit.streamed import BlockReader


# Transform ops this module applies (the graph walker emits "dequantize", "quantize" and "rescale").
STEP_OPS = frozenset({"dequantize", "quantize", "rescale", "nbits", "block_gather", "bnb4"})


# Of those, the ones whose output shape differs from their input's.
RESHAPING_STEPS = frozenset({"nbits", "block_gather", "bnb4"})


Loader = Callable[[Source], np.ndarray]


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
        out_type = (
            step.params[2] if len(step.params) > 2 else (step.extra[1].tensor.data_type if zp is not None else TensorProto.UINT8)
        )
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


# ---------------------------------------------------------------------------------------------
# Transforms between the stored tensor and the op input
# ---------------------------------------------------------------------------------------------
def _reshape_dims(dims: tuple[int, ...], shape: tuple[int, ...], allowzero: int) -> tuple[int, ...]:
    out = [dims[i] if (s == 0 and not allowzero and i < len(dims)) else s for i, s in enumerate(shape)]
    total = math.prod(dims)
    if out.count(-1) == 1:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = total // known if known else 0
    if math.prod(out) != total or any(d < 0 for d in out):
        raise InputError(f"cannot reshape a tensor of shape {list(dims)} to {list(shape)}")
    return tuple(out)


def _norm_axes(axes: tuple[int, ...], rank: int) -> list[int]:
    return sorted(a + rank if a < 0 else a for a in axes)


def _slices(dims: tuple[int, ...], params: tuple) -> tuple[slice, ...]:
    """Python slices for an ONNX Slice (starts, ends, axes, steps); numpy clamps as ONNX does."""
    starts, ends, axes, steps = params
    axes = axes or tuple(range(len(starts)))
    steps = steps or (1,) * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)) or any(s == 0 for s in steps):
        raise InputError(f"Slice parameters {list(starts)}, {list(ends)}, {list(axes)}, {list(steps)} do not fit")
    out = [slice(None)] * len(dims)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + len(dims) if axis < 0 else axis
        if not 0 <= axis < len(dims):
            raise InputError(f"Slice axis {axis} outside a tensor of rank {len(dims)}")
        out[axis] = slice(start, end, step)  # Python clamps out-of-range bounds as ONNX does
    return tuple(out)


def _concat_dims(dims: tuple[int, ...], params: tuple) -> tuple[int, ...]:
    axis, parts = params
    shapes = [transformed_dims(dims, part) for part in parts]
    rank = len(shapes[0])
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank or any(
        len(s) != rank or s[:axis] + s[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :] for s in shapes
    ):
        raise InputError(f"Concat of parts {[list(s) for s in shapes]} along axis {params[0]} does not fit")
    return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1 :]


def transformed_dims(dims: tuple[int, ...], transforms: tuple[Transform, ...]) -> tuple[int, ...]:
    """The shape the op sees, from the stored shape and the pass-through steps."""
    for t in transforms:
        if t.op == "slice":
            dims = tuple(len(range(*sl.indices(d))) for sl, d in zip(_slices(dims, t.params), dims))
        elif t.op == "concat":
            dims = _concat_dims(dims, t.params)
        elif t.op == "transpose":
            perm = t.params or tuple(reversed(range(len(dims))))
            if sorted(perm) != list(range(len(dims))):
                raise InputError(f"Transpose perm {list(perm)} does not fit shape {list(dims)}")
            dims = tuple(dims[p] for p in perm)
        elif t.op == "reshape":
            dims = _reshape_dims(dims, t.params[0], t.params[1])
        elif t.op == "squeeze":
            axes = _norm_axes(t.params, len(dims)) if t.params else [i for i, d in enumerate(dims) if d == 1]
            dims = tuple(d for i, d in enumerate(dims) if i not in axes)
        elif t.op == "unsqueeze":
            out = list(dims)
            for a in _norm_axes(t.params, len(dims) + len(t.params)):
                out.insert(a, 1)
            dims = tuple(out)
        elif t.op == "flatten":
            axis = t.params[0] if t.params[0] >= 0 else t.params[0] + len(dims)
            dims = (math.prod(dims[:axis]), math.prod(dims[axis:]))
        elif t.op in RESHAPING_STEPS:
            dims = step_dims(dims, t)
    return dims


def materialise(source: Source) -> np.ndarray:
    """Read the stored tensor and apply the pass-through steps (quantization is handled by `quant`)."""
    return _apply(source.tensor.load(), source.transforms)


def _apply(arr: np.ndarray, transforms: tuple[Transform, ...]) -> np.ndarray:
    dims = tuple(arr.shape)
    for t in transforms:
        new_dims = transformed_dims(dims, (t,))
        if t.op == "slice":
            arr = arr[_slices(dims, t.params)]
        elif t.op == "concat":
            axis = t.params[0] + len(new_dims) if t.params[0] < 0 else t.params[0]
            arr = np.concatenate([_apply(arr, part) for part in t.params[1]], axis=axis)
        elif t.op == "transpose":
            arr = np.transpose(arr, t.params or None)
        elif t.op in ("reshape", "squeeze", "unsqueeze", "flatten"):
            arr = arr.reshape(new_dims)
        elif t.op in STEP_OPS:
            arr = apply_step(arr, t, materialise)
        dims = new_dims
    return arr


# dtypes a block reader may hand out: what the analysis computes with natively.
_NATIVE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def block_reader(source: Source) -> tuple[tuple[int, int], np.dtype, BlockReader] | None:
    """(shape, dtype, read(rows, cols)) of the op's 2-D input array, read in blocks, or None
    where only `materialise` can give it.

    Two kinds of weight are read in blocks: a MatMulNBits weight with no other step (each block
    dequantized from the packed codes, which stay mapped: 1/8 of the float32 size at 4 bits),
    and a local memory-mapped float table read in whole rows (read_rows). Everything else (other
    quantization formats, slices, transposes, in-file data) is read whole as before.
    """
    tensor = source.tensor
    onnx_external = isinstance(tensor.proto, TensorProto) and tensor.is_mapped  # not a safetensors/GGUF payload
    if not source.transforms and onnx_external and len(tensor.dims) == 2 and tensor.is_float:
        dtype = numpy_dtype(tensor.data_type)
        if dtype not in _NATIVE:
            return None
        tensor.load()  # checks the declared range against the file once
        width = tensor.dims[1]

        def rows_of_table(rows: slice, cols: slice) -> np.ndarray:
            block = tensor.read_rows(rows.start, rows.stop)
            return block if (cols.start, cols.stop) == (0, width) else block[:, cols]

        return (tensor.dims[0], width), dtype, rows_of_table
    if len(source.transforms) == 1 and source.transforms[0].op == "nbits":
        step = source.transforms[0]
        k, n, bits, block = step.params

        def param(i: int) -> np.ndarray | None:
            src = step.extra[i] if len(step.extra) > i else None
            return None if src is None else np.asarray(materialise(src))

        scales = param(0)
        if scales is None:
            return None  # materialise says why
        try:
            parts: NBits = nbits_parts(tensor.load(), scales, param(1), param(2), k, n, bits, block)
        except (ValueError, IndexError) as exc:
            raise InputError(f"cannot dequantize (nbits): {exc}") from None
        if parts.dtype not in _NATIVE:
            return None
        return (n, k), parts.dtype, lambda rows, cols: nbits_block(parts, rows, cols)
    return None
