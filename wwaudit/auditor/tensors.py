"""Reading weight tensors: in-file data and external data files, lazily and safely.

A model file is untrusted input. External data is read only from regular files inside the
model's own folder: the location must be relative, must not climb out with `..`, must not pass
through a symbolic link (file or parent folder), must not be a hard link, and offset+length must
lie inside the file and agree with the declared shape and dtype. Large tensors are memory-mapped,
never read whole, so peak memory stays bounded by what the analysis touches.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from wwaudit.errors import InputError

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

# Refuse to materialise a single tensor larger than this many elements from in-file data without
# the data actually being there (memory-bomb guard; external data is checked against file size).
MAX_ELEMENTS = 1 << 36


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


@dataclass
class TensorRef:
    """A weight tensor as found in the file: where it lives, its shape and type, no data yet."""

    name: str
    dims: tuple[int, ...]
    data_type: int
    origin: str  # initializer | constant | sparse_initializer | attribute | function-constant
    scope: str  # "" for the main graph, else the subgraph/function path
    proto: Any  # TensorProto or SparseTensorProto (data not loaded for external tensors)
    base_dir: str

    @property
    def key(self) -> str:
        """Unique identity across scopes (the same name may appear in several subgraphs)."""
        return f"{self.scope}/{self.name}" if self.scope else self.name

    @property
    def size(self) -> int:
        return element_count(self.dims) if all(d >= 0 for d in self.dims) else 0

    @property
    def dtype(self) -> str:
        return dtype_name(self.data_type)

    @property
    def is_external(self) -> bool:
        return isinstance(self.proto, TensorProto) and self.proto.data_location == TensorProto.EXTERNAL

    @property
    def is_float(self) -> bool:
        return self.data_type in FLOAT_TYPES

    @property
    def is_integer(self) -> bool:
        return self.data_type in INT_TYPES

    def load(self) -> np.ndarray:
        """The tensor's values (a read-only memory map for external data where possible)."""
        if isinstance(self.proto, onnx.SparseTensorProto):
            return _load_sparse(self.proto, self.dims)
        if self.is_external:
            return _load_external(self.proto, self.base_dir, self.dims, self.data_type)
        return _load_inline(self.proto, self.dims, self.data_type)


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
        raise InputError(
            f"tensor '{proto.name}' holds {arr.size} values, its shape {list(dims)} needs {element_count(dims)}"
        )
    return arr.reshape(dims)


def _load_sparse(proto: onnx.SparseTensorProto, dims: tuple[int, ...]) -> np.ndarray:
    values = _load_inline(proto.values, tuple(proto.values.dims), proto.values.data_type)
    indices = _load_inline(proto.indices, tuple(proto.indices.dims), proto.indices.data_type)
    count = element_count(dims)
    if count > MAX_ELEMENTS:
        raise InputError(f"sparse tensor '{proto.values.name}' declares {count} elements: refusing")
    dense = np.zeros(count, dtype=values.dtype)
    if indices.ndim == 1:
        flat = indices.astype(np.int64)
    elif indices.ndim == 2:
        flat = np.ravel_multi_index(tuple(indices.astype(np.int64).T), dims, mode="raise")
    else:
        raise InputError(f"sparse tensor '{proto.values.name}' has indices of rank {indices.ndim}")
    if flat.size != values.size or (flat.size and (flat.min() < 0 or flat.max() >= count)):
        raise InputError(f"sparse tensor '{proto.values.name}' has indices outside its shape")
    dense[flat] = values.reshape(-1)
    return dense.reshape(dims)


def external_info(proto: TensorProto) -> dict[str, str]:
    """The external_data key/value pairs of a tensor."""
    return {entry.key: entry.value for entry in proto.external_data}


def _safe_open(base_dir: str, location: str) -> tuple[int, os.stat_result]:
    """Open `location` inside `base_dir` refusing every path escape; returns (fd, fstat)."""
    if not location:
        raise InputError("external data has an empty location")
    if "\x00" in location:
        raise InputError("external data location contains a NUL byte")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise InputError(f"external data location '{location}' is absolute: refusing to read outside the model's folder")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise InputError(f"external data location '{location}' climbs out of the model's folder with '..'")
    base_real = os.path.realpath(base_dir)
    target = os.path.join(base_real, *parts)
    if os.path.realpath(target) != os.path.normpath(target):
        raise InputError(f"external data location '{location}' passes through a symbolic link: refusing")
    if os.path.commonpath([base_real, os.path.realpath(target)]) != base_real:
        raise InputError(f"external data location '{location}' leads outside the model's folder")
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"external data file '{location}' not found beside the model") from None
    except OSError as exc:
        raise InputError(f"external data file '{location}' cannot be opened: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"external data '{location}' is not a regular file")
    if st.st_nlink > 1:
        os.close(fd)
        raise InputError(f"external data file '{location}' is a hard link: refusing")
    return fd, st


def _load_external(proto: TensorProto, base_dir: str, dims: tuple[int, ...], data_type: int) -> np.ndarray:
    info = external_info(proto)
    location = info.get("location", "")
    try:
        offset = int(info.get("offset", "0") or 0)
        length_str = info.get("length")
        length = int(length_str) if length_str not in (None, "") else None
    except ValueError:
        raise InputError(f"tensor '{proto.name}' has a non-numeric external offset/length") from None
    count = element_count(dims)
    expected = stored_nbytes(data_type, count)
    if expected is None:
        raise InputError(f"tensor '{proto.name}' has unsupported dtype {dtype_name(data_type)}")
    if offset < 0 or (length is not None and length < 0):
        raise InputError(f"tensor '{proto.name}' has a negative external offset or length")
    if length is not None and length != expected:
        raise InputError(
            f"tensor '{proto.name}': external length {length} does not match shape {list(dims)} "
            f"x {dtype_name(data_type)} = {expected} bytes"
        )
    fd, st = _safe_open(base_dir, location)
    try:
        if offset + expected > st.st_size:
            raise InputError(
                f"tensor '{proto.name}': bytes {offset}..{offset + expected} lie beyond the end of "
                f"'{location}' ({st.st_size} bytes)"
            )
        if expected == 0:
            return np.zeros(dims, dtype=np.float32)
        page = mmap.ALLOCATIONGRANULARITY
        start = (offset // page) * page
        mm = mmap.mmap(fd, offset + expected - start, access=mmap.ACCESS_READ, offset=start)
    finally:
        os.close(fd)
    buf = memoryview(mm)[offset - start : offset - start + expected]
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
