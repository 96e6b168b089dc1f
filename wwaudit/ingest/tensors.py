"""Reading weight tensors: in-file data and external data files, lazily and safely.

A model file is untrusted input. External data is read only from regular files inside the
model's own folder: the location must be relative, must not climb out with `..`, must not pass
through a symbolic link (file or parent folder), must not be a hard link, and offset+length must
lie inside the file and agree with the declared shape and dtype. Large tensors are memory-mapped,
never read whole, so peak memory stays bounded by what the analysis touches.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import re
import stat
from abc import ABC, abstractmethod
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


def map_range(fd: int, offset: int, length: int, what: str) -> memoryview:
    """Bytes [offset, offset+length) of the open regular file `fd`, memory-mapped read-only.

    The range is checked against the file's size now (a file truncated after opening gives an
    InputError, not a SIGBUS at first touch of a page that was checked when the header was read).
    """
    size = os.fstat(fd).st_size
    if offset < 0 or length < 0 or offset + length > size:
        raise InputError(f"{what}: bytes {offset}..{offset + length} lie beyond the end of the file ({size} bytes)")
    if length == 0:
        return memoryview(b"")
    page = mmap.ALLOCATIONGRANULARITY
    start = (offset // page) * page
    mm = mmap.mmap(fd, offset + length - start, access=mmap.ACCESS_READ, offset=start)
    return memoryview(mm)[offset - start : offset - start + length]


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


# Flags of every open of a file named by the model: never follow a symbolic link in the last
# component, never block (a FIFO named as data would otherwise hang the audit), no fd leak.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# Walking folder by folder with dir_fd makes every component checkable (POSIX); elsewhere the
# weaker realpath comparison is all there is.
_OPENAT = os.open in os.supports_dir_fd and bool(_NOFOLLOW) and hasattr(os, "O_DIRECTORY")


def location_parts(location: str) -> list[str]:
    """The path components of an external-data location, refusing every form of escape.

    Both separators count ('\\' is a separator on Windows, where the same file may be audited),
    so '..\\x' is refused everywhere; empty and '.' components are dropped.
    """
    if not location:
        raise InputError("external data has an empty location")
    if "\x00" in location:
        raise InputError("external data location contains a NUL byte")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        raise InputError(f"external data location '{location}' is an absolute path: refusing to read outside the model's folder")
    parts = [p for p in location.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"external data location '{location}' climbs out of the model's folder with '..': refusing")
    if not parts:
        raise InputError(f"external data location '{location}' names the model's folder, not a file")
    return parts


def _open_error(location: str, exc: OSError, what: str = "file") -> InputError:
    if exc.errno == errno.ENOENT:
        return InputError(f"external data file '{location}' not found beside the model")
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return InputError(f"external data location '{location}' passes through a symbolic link ({what}): refusing")
    return InputError(f"external data file '{location}' cannot be opened: {exc.strerror}")


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_within(base_dir: str, parts: list[str], location: str) -> int:
    """Open base_dir/parts component by component, no symbolic link anywhere below base_dir."""
    if not _OPENAT:
        base_real = os.path.realpath(base_dir)
        target = os.path.join(base_real, *parts)
        if os.path.realpath(target) != os.path.normpath(target):
            raise InputError(f"external data location '{location}' passes through a symbolic link: refusing")
        try:
            return os.open(target, _READ_FLAGS)
        except OSError as exc:
            raise _open_error(location, exc) from None
    try:
        dir_fd = os.open(base_dir, _DIR_FLAGS)
    except OSError as exc:
        raise InputError(f"the model's folder cannot be opened for external data: {exc.strerror}") from None
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR and _is_link(part, dir_fd):
                    exc.errno = errno.ELOOP  # Linux answers ENOTDIR for a symlinked folder
                raise _open_error(location, exc, "folder") from None
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            return os.open(parts[-1], _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise _open_error(location, exc) from None
    finally:
        os.close(dir_fd)


def safe_open(base_dir: str, location: str) -> tuple[int, os.stat_result]:
    """Open `location` inside `base_dir` refusing every path escape; returns (fd, fstat).

    The checks are made on the open file descriptor, not on a path looked up again later, so a
    file swapped between check and use cannot slip through: '..' and absolute paths are refused
    before any system call, every folder below `base_dir` and the file itself are opened with
    O_NOFOLLOW (a symbolic link anywhere fails), and the opened file must be a regular file with
    one hard link (a hard link is indistinguishable from the original and can point anywhere on
    the same file system).
    """
    parts = location_parts(location)
    fd = _open_within(base_dir, parts, location)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"external data '{location}' is not a regular file")
    if st.st_nlink > 1:
        os.close(fd)
        raise InputError(f"external data file '{location}' is a hard link ({st.st_nlink} names): refusing")
    return fd, st


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
    fd, st = safe_open(base_dir, location)
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
