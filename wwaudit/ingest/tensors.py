"""Reading weight tensors: in-file data and external data files, lazily and safely.

A model file is untrusted input. External data is read through `storage.open_data` only: from
regular files inside the model's own folder (the location must be relative, must not climb out
with `..`, must not pass through a symbolic link, must not be a hard link) or from keys below an
object-store model's prefix, and offset+length must lie inside the file and agree with the
declared shape and dtype. Local tensors are memory-mapped and remote ones fetched by byte range,
never read whole, so peak memory stays bounded by what the analysis touches.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from wwaudit.errors import InputError
from wwaudit.ingest.storage import is_url, open_data

# dtypes whose values are real numbers we can analyse after conversion to float64.
FLOAT_TYPES = {
    TensorProto.FLOAT,
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ,
    TensorProto.FLOAT8E5M2,
    TensorProto.FLOAT8E5M2FNUZ,
}
INT_TYPES = {
    TensorProto.INT8,
    TensorProto.UINT8,
    TensorProto.INT16,
    TensorProto.UINT16,
    TensorProto.INT32,
    TensorProto.UINT32,
    TensorProto.INT64,
    TensorProto.UINT64,
    TensorProto.INT4,
    TensorProto.UINT4,
}
PACKED_4BIT = {TensorProto.INT4, TensorProto.UINT4}
for _name in ("FLOAT4E2M1",):
    if hasattr(TensorProto, _name):
        PACKED_4BIT.add(getattr(TensorProto, _name))
        FLOAT_TYPES.add(getattr(TensorProto, _name))

# Refuse to materialise any single tensor larger than this many elements (4 Gi: 32 GiB as float64),
# whatever --max-memory says: a last guard for callers that load tensors outside the audit loop
# (sparse tensors are scattered into a dense array of this size; in-file and external data are
# also checked against the bytes actually present).
MAX_ELEMENTS = 1 << 32
# Largest float64 magnitude whose square, summed over a million rows, stays finite.
FLOAT64_SAFE_MAX = 1e150


def dtype_name(data_type: int) -> str:
    """Human name of an ONNX dtype (e.g. 'float16'), 'unknown(N)' when onnx does not know it."""
    try:
        return TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"unknown({data_type})"


def element_count(dims: tuple[int, ...]) -> int:
    """Number of elements of a shape; raises InputError on negative dims."""
    if any(d < 0 for d in dims):
        raise InputError(f"tensor has a negative dimension: {list(dims)}")
    return math.prod(dims)


def stored_nbytes(data_type: int, count: int) -> int | None:
    """Bytes that `count` elements of `data_type` take as raw data, None if not a fixed-size type."""
    if data_type in PACKED_4BIT:
        return (count + 1) // 2
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(data_type)
    except (KeyError, ValueError, TypeError):
        return None
    if np_dtype == np.dtype(object):
        return None
    return count * np.dtype(np_dtype).itemsize


class Payload(ABC):
    """Where a tensor of another format (safetensors, GGUF) keeps its values: its source module
    checked the byte range against the file when it opened it, and reads it here on demand."""

    # Read as a memory map of the file (no copy): the engine sizes the layer's working set by it.
    mapped: bool = False
    # Bytes the values take in the file (quantized blocks included); set by each format's payload.
    length: int

    @abstractmethod
    def read(self) -> np.ndarray:
        """The values, in the tensor's numpy shape (a read-only memory map where the dtype allows)."""


@dataclass
class TensorRef:
    """A weight tensor as found in the file: where it lives, its shape and type, no data yet."""

    name: str
    dims: tuple[int, ...]
    data_type: int
    origin: str  # initializer | constant | sparse_initializer | attribute | function-constant
    scope: str  # "" for the main graph, else the subgraph/function path
    proto: Any  # TensorProto or SparseTensorProto (data not loaded for external tensors), or a Payload
    base_dir: str
    # How another format stores the values when no ONNX dtype says it (GGUF 'q8_0'...); data_type
    # is then the dtype the values are read into.
    stored_as: str | None = None

    @property
    def key(self) -> str:
        """Unique identity across scopes (the same name may appear in several subgraphs)."""
        return f"{self.scope}/{self.name}" if self.scope else self.name

    @property
    def size(self) -> int:
        return element_count(self.dims) if all(d >= 0 for d in self.dims) else 0

    @property
    def dtype(self) -> str:
        return self.stored_as or dtype_name(self.data_type)

    @property
    def nbytes(self) -> int:
        """Bytes the values take in the file, from the header alone (0 when the dtype has no fixed size)."""
        if isinstance(self.proto, Payload):
            return self.proto.length
        return stored_nbytes(self.data_type, self.size) or 0

    @property
    def is_external(self) -> bool:
        if isinstance(self.proto, Payload):
            return self.proto.mapped
        return isinstance(self.proto, TensorProto) and self.proto.data_location == TensorProto.EXTERNAL

    @property
    def is_mapped(self) -> bool:
        """External data memory-mapped from a local file (pages, not a copy); remote ranges are copies."""
        return self.is_external and not is_url(self.base_dir)

    @property
    def unsupported(self) -> str | None:
        """Why this tensor can never be read as numbers (negative dims, strings, unknown dtypes), else None."""
        if any(d < 0 for d in self.dims):
            return f"invalid shape {list(self.dims)}: negative dimension"
        if self.data_type == TensorProto.STRING:
            return "string tensor"
        if self.data_type == TensorProto.UNDEFINED or stored_nbytes(self.data_type, 1) is None:
            return f"unsupported dtype {self.dtype}"
        return None

    @property
    def is_float(self) -> bool:
        return self.data_type in FLOAT_TYPES

    @property
    def is_integer(self) -> bool:
        return self.data_type in INT_TYPES

    def load(self) -> np.ndarray:
        """The tensor's values (a read-only memory map for external data where possible)."""
        if isinstance(self.proto, Payload):
            arr = self.proto.read()
            if arr.size != element_count(self.dims):
                raise InputError(f"tensor '{self.name}' holds {arr.size} values, its shape {list(self.dims)} needs {self.size}")
            arr = arr.reshape(self.dims)
        elif isinstance(self.proto, onnx.SparseTensorProto):
            arr = _load_sparse(self.proto, self.dims)
        elif self.is_external:
            arr = _load_external(self.proto, self.base_dir, self.dims, self.data_type)
        else:
            arr = _load_inline(self.proto, self.dims, self.data_type)
        if arr.dtype == np.float64:
            _check_float64_range(self.name, arr)
        return arr

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a local external 2-D tensor in a native float dtype, mapped for
        this read only: pages of a large table leave the process with the rows (the eager path
        keeps every page it touched mapped until the layer is done). `load()` checks the range first."""
        location, offset, _length = external_range(self.proto)
        np_dtype = numpy_dtype(self.data_type)
        row_bytes = np_dtype.itemsize * self.dims[1]
        data = open_data(self.base_dir, location)
        try:
            buf = data.read(offset + start * row_bytes, (stop - start) * row_bytes)
        finally:
            data.close()
        return np.frombuffer(buf, dtype=np_dtype).reshape(stop - start, self.dims[1])


def _check_float64_range(name: str, arr: np.ndarray) -> None:
    """Refuse finite float64 values whose squares overflow (|w| > 1e150): the Gram matrix would
    hold inf and the eigensolver fail. Narrower dtypes cannot get there (float32 max is 3.4e38).
    NaN and Inf are left to the analysis, which reports them as such. Chunked: no full copy."""
    flat = arr.reshape(-1)
    step = 1 << 22
    for start in range(0, flat.size, step):
        chunk = flat[start : start + step]
        peak = float(np.fmax.reduce(np.where(np.isfinite(chunk), np.abs(chunk), 0.0), initial=0.0))
        if peak > FLOAT64_SAFE_MAX:
            raise InputError(
                f"tensor '{name}' holds float64 values up to {peak:.1e} in magnitude: their squares "
                f"overflow, the spectrum cannot be computed"
            )


def _check_inline_size(proto: TensorProto, dims: tuple[int, ...], data_type: int) -> None:
    count = element_count(dims)
    if count > MAX_ELEMENTS:
        raise InputError(f"tensor '{proto.name}' declares {count} elements: refusing (memory bomb)")
    if proto.HasField("raw_data") or proto.raw_data:
        expected = stored_nbytes(data_type, count)
        if expected is not None and len(proto.raw_data) != expected:
            raise InputError(
                f"tensor '{proto.name}' raw data has {len(proto.raw_data)} bytes, "
                f"its shape {list(dims)} and dtype {dtype_name(data_type)} need {expected}"
            )


def _load_inline(proto: TensorProto, dims: tuple[int, ...], data_type: int) -> np.ndarray:
    if data_type == TensorProto.STRING:
        raise InputError(f"tensor '{proto.name}' holds strings, not numbers")
    if data_type == TensorProto.UNDEFINED or stored_nbytes(data_type, 1) is None:
        raise InputError(f"tensor '{proto.name}' has unsupported dtype {dtype_name(data_type)}")
    _check_inline_size(proto, dims, data_type)
    try:
        arr = numpy_helper.to_array(proto)
    except Exception as exc:  # onnx raises ValueError/TypeError/AssertionError on bad fields
        raise InputError(f"tensor '{proto.name}' cannot be decoded: {exc}") from None
    if arr.size != element_count(dims):
        raise InputError(f"tensor '{proto.name}' holds {arr.size} values, its shape {list(dims)} needs {element_count(dims)}")
    return arr.reshape(dims)


def _load_sparse(proto: onnx.SparseTensorProto, dims: tuple[int, ...]) -> np.ndarray:
    """Scatter a sparse tensor's values into a dense array; bad indices spoil this tensor only."""
    name = proto.values.name
    values = _load_inline(proto.values, tuple(proto.values.dims), proto.values.data_type)
    indices = _load_inline(proto.indices, tuple(proto.indices.dims), proto.indices.data_type)
    if indices.dtype.kind not in "iu":
        raise InputError(f"sparse tensor '{name}' has indices of dtype {indices.dtype}, not integers")
    count = element_count(dims)
    if count > MAX_ELEMENTS:
        raise InputError(f"sparse tensor '{name}' declares {count} elements: refusing")
    flat = sparse_flat_indices(name, indices, dims)
    if flat.size != values.size:
        raise InputError(f"sparse tensor '{name}' has {flat.size} indices for {values.size} values")
    dense = np.zeros(count, dtype=values.dtype)
    dense[flat] = values.reshape(-1)
    return dense.reshape(dims)


def sparse_flat_indices(name: str, indices: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """Linear positions of a sparse tensor's indices: [NNZ] linear or [NNZ, rank] coordinates.

    Every index is checked against the shape before use (numpy's own errors would end the whole
    audit): out of range, negative, or coordinates whose width is not the tensor's rank.
    """
    count = element_count(dims)
    if indices.dtype.kind == "u" and indices.dtype.itemsize == 8 and indices.size and int(indices.max()) >= 1 << 63:
        raise InputError(f"sparse tensor '{name}' has indices outside its shape {list(dims)}")
    idx = indices.astype(np.int64)
    if idx.ndim == 1:
        flat = idx
    elif idx.ndim == 2:
        if idx.shape[1] != len(dims) or not dims:
            raise InputError(f"sparse tensor '{name}' has {idx.shape[1]}-wide coordinates for a rank-{len(dims)} shape")
        if idx.size and (idx.min() < 0 or np.any(idx >= np.asarray(dims, dtype=np.int64))):
            raise InputError(f"sparse tensor '{name}' has coordinates outside its shape {list(dims)}")
        flat = np.ravel_multi_index(tuple(idx.T), dims) if idx.size else np.zeros(0, np.int64)
    else:
        raise InputError(f"sparse tensor '{name}' has indices of rank {idx.ndim}")
    if flat.size and (flat.min() < 0 or flat.max() >= count):
        raise InputError(f"sparse tensor '{name}' has indices outside its shape {list(dims)}")
    return flat


# The keys ONNX defines for external_data; anything else is refused (see parse_external).
EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})


@dataclass(frozen=True)
class ExternalRef:
    """Where an external tensor's bytes are: the one reading of its external_data entries."""

    location: str
    offset: int
    length: int | None


def parse_external(proto: TensorProto) -> ExternalRef:
    """The external_data of a tensor, refusing anything ambiguous or malformed.

    This is the only function that reads external_data: the load-time check and the read use
    the same answer. A repeated key (two `location`s: one checked, another read) or a key ONNX
    does not define is refused as a whole, never resolved by picking one, and offset/length
    must be plain non-negative decimal integers.
    """
    info: dict[str, str] = {}
    for entry in proto.external_data:
        if entry.key in info:
            raise InputError(f"tensor '{proto.name}': external_data repeats the key '{entry.key}': refusing")
        if entry.key not in EXTERNAL_KEYS:
            raise InputError(f"tensor '{proto.name}': external_data has the unknown key '{entry.key[:80]}': refusing")
        info[entry.key] = entry.value
    numbers: dict[str, int | None] = {}
    for key in ("offset", "length"):
        text = info.get(key, "")
        if text and not re.fullmatch(r"[0-9]{1,20}", text):
            raise InputError(f"tensor '{proto.name}': external {key} '{text[:40]}' is not a non-negative integer: refusing")
        numbers[key] = int(text) if text else None
    return ExternalRef(info.get("location", ""), numbers["offset"] or 0, numbers["length"])


def external_range(proto: TensorProto) -> tuple[str, int, int | None]:
    """(location, offset, length or None) of an external tensor (parse_external's reading)."""
    ref = parse_external(proto)
    return ref.location, ref.offset, ref.length


def _load_external(proto: TensorProto, base_dir: str, dims: tuple[int, ...], data_type: int) -> np.ndarray:
    location, offset, length = external_range(proto)
    count = element_count(dims)
    expected = stored_nbytes(data_type, count)
    if expected is None:
        raise InputError(f"tensor '{proto.name}' has unsupported dtype {dtype_name(data_type)}")
    if length is not None and length != expected:
        raise InputError(
            f"tensor '{proto.name}': external length {length} does not match shape {list(dims)} "
            f"x {dtype_name(data_type)} = {expected} bytes"
        )
    data = open_data(base_dir, location)
    try:
        if offset + expected > data.size:
            raise InputError(
                f"tensor '{proto.name}': bytes {offset}..{offset + expected} lie beyond the end of "
                f"'{location}' ({data.size} bytes)"
            )
        if expected == 0:
            return np.zeros(dims, dtype=np.float32)
        buf = data.read(offset, expected)
    finally:
        data.close()
    if data_type in PACKED_4BIT:
        inline = TensorProto()
        inline.CopyFrom(proto)
        del inline.external_data[:]
        inline.data_location = TensorProto.DEFAULT
        inline.raw_data = bytes(buf)
        return _load_inline(inline, dims, data_type)
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(data_type)
    arr = np.frombuffer(buf, dtype=np_dtype, count=count)
    if data_type == TensorProto.BFLOAT16 and arr.dtype == np.uint16:
        arr = _bf16_bits_to_float32(arr)
    return arr.reshape(dims)


def _bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Older onnx releases give bfloat16 as raw uint16 bits: widen them exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def as_float64(arr: np.ndarray) -> np.ndarray:
    """Exact widening to float64 of any supported float type (float16, bfloat16, float8...)."""
    if arr.dtype == np.float64:
        return arr
    if arr.dtype.kind in "fiu" or arr.dtype.name.startswith(("bfloat16", "float8", "float4")):
        return arr.astype(np.float64)
    raise InputError(f"cannot convert dtype {arr.dtype} to float")


# Machine epsilon of the stored dtype, for the rank threshold σ_max·N·eps.
_EPS: dict[int, float] = {
    TensorProto.DOUBLE: float(np.finfo(np.float64).eps),
    TensorProto.FLOAT: float(np.finfo(np.float32).eps),
    TensorProto.FLOAT16: float(np.finfo(np.float16).eps),
    TensorProto.BFLOAT16: 2.0**-7,
    TensorProto.FLOAT8E4M3FN: 2.0**-3,
    TensorProto.FLOAT8E4M3FNUZ: 2.0**-3,
    TensorProto.FLOAT8E5M2: 2.0**-2,
    TensorProto.FLOAT8E5M2FNUZ: 2.0**-2,
}


def dtype_eps(data_type: int) -> float:
    """Epsilon of the weights' own dtype (float32's for integer/quantized storage: scales are float32)."""
    return _EPS.get(data_type, float(np.finfo(np.float32).eps))


def numpy_dtype(data_type: int) -> np.dtype:
    """The numpy dtype of an ONNX element type: the engine sizes a layer's working set with it
    without importing onnx itself."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
