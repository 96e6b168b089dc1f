"""safetensors files and sharded folders behind the source interface, read without the package.

The format is an 8-byte little-endian header length, a JSON header naming every tensor's dtype,
shape and byte range, then the raw bytes. The header is parsed here (not by the safetensors
package) so that every number in it is checked before anything is mapped, like ONNX external
data: the header fits in the file, every tensor's range lies inside the data, agrees with its
shape and dtype, and overlaps no other tensor. A sharded folder is read through its
`model.safetensors.index.json`: every shard it names must be a regular file inside the folder
(no '..', no symbolic or hard link: storage.safe_open), every tensor it maps must be in that
shard, and no tensor may sit in two shards. Tensors are listed in the natural order of their
names, so a layer's id does not depend on how the model was sharded. Values are memory-mapped
on demand: the audit holds one layer at a time, whatever the model's size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from wwaudit.errors import InputError
from wwaudit.ingest.plan import LayerSpec
from wwaudit.ingest.sources.interface import ModelSource
from wwaudit.ingest.sources.named import Architecture, natural_key, plan_named
from wwaudit.ingest.storage import map_range, safe_open
from wwaudit.ingest.tensors import Payload, TensorRef, stored_nbytes
from wwaudit.records import IntegrityIssue, ModelInfo

INDEX_NAME = "model.safetensors.index.json"
# The header is JSON describing tensors: 100 MB holds millions of entries (the safetensors
# package's own limit); a larger one is a crafted file.
MAX_HEADER = 100_000_000
MAX_JSON = 50_000_000  # index.json and config.json
DTYPES = {
    "F64": TensorProto.DOUBLE,
    "F32": TensorProto.FLOAT,
    "F16": TensorProto.FLOAT16,
    "BF16": TensorProto.BFLOAT16,
    "F8_E4M3": TensorProto.FLOAT8E4M3FN,
    "F8_E5M2": TensorProto.FLOAT8E5M2,
    "I64": TensorProto.INT64,
    "I32": TensorProto.INT32,
    "I16": TensorProto.INT16,
    "I8": TensorProto.INT8,
    "U64": TensorProto.UINT64,
    "U32": TensorProto.UINT32,
    "U16": TensorProto.UINT16,
    "U8": TensorProto.UINT8,
    "BOOL": TensorProto.BOOL,
}
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def _open_file(path: str) -> int:
    """Open a file the user named (the model itself): a regular, non-empty file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path}: is not a regular file")
    return fd


def _read_range(fd: int, offset: int, length: int, what: str) -> memoryview:
    """The one byte read of this format (a memory map; storage.map_range checks the range)."""
    return map_range(fd, offset, length, what)


@dataclass
class _Payload(Payload):
    """One tensor's bytes in one file, checked against the header when the file was opened."""

    path: str
    base_dir: str
    location: str | None  # a shard inside base_dir (opened with safe_open), or None: `path` itself
    offset: int
    length: int
    data_type: int
    mapped: bool = True

    def read(self) -> np.ndarray:
        fd = safe_open(self.base_dir, self.location)[0] if self.location else _open_file(self.path)
        try:
            buf = _read_range(fd, self.offset, self.length, f"{self.path}")
        finally:
            os.close(fd)
        np_dtype = helper.tensor_dtype_to_np_dtype(self.data_type)
        arr = np.frombuffer(buf, dtype=np_dtype)
        if self.data_type == TensorProto.BFLOAT16 and arr.dtype == np.uint16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr


def _check_entry(label: str, name: str, entry: object, data_size: int) -> tuple[int, tuple[int, ...], int, int]:
    """(ONNX dtype, shape, begin, end) of one header entry, refusing anything inconsistent."""
    if not isinstance(entry, dict):
        raise InputError(f"{label}: tensor '{name[:120]}' has a malformed header entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPES:
        raise InputError(f"{label}: tensor '{name[:120]}' has an unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InputError(f"{label}: tensor '{name[:120]}' has an invalid shape {str(shape)[:80]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and o >= 0 for o in offsets)):
        raise InputError(f"{label}: tensor '{name[:120]}' has invalid data_offsets {str(offsets)[:80]}")
    begin, end = offsets
    if begin > end or end > data_size:
        raise InputError(
            f"{label}: tensor '{name[:120]}' bytes {begin}..{end} lie beyond the end of the data ({data_size} bytes)"
        )
    need = stored_nbytes(DTYPES[dtype], math.prod(shape))
    if need != end - begin:
        raise InputError(
            f"{label}: tensor '{name[:120]}' has {end - begin} bytes, its shape {shape} and dtype {dtype} need {need}"
        )
    return DTYPES[dtype], tuple(shape), begin, end


def read_header(fd: int, label: str) -> tuple[dict[str, tuple[int, tuple[int, ...], int, int]], dict, int]:
    """Every tensor of one safetensors file as (dtype, shape, absolute begin, end), its metadata,
    and the file's size; InputError with one sentence for any inconsistency."""
    size = os.fstat(fd).st_size
    if size < 8:
        raise InputError(f"{label}: truncated safetensors file ({size} bytes, no header)")
    length = int.from_bytes(bytes(_read_range(fd, 0, 8, label)), "little")
    if length > MAX_HEADER or length > size - 8:
        raise InputError(f"{label}: safetensors header of {length} bytes is larger than the file ({size} bytes)")
    try:
        header = json.loads(bytes(_read_range(fd, 8, length, label)))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError(f"{label}: safetensors header is not valid JSON (truncated or corrupt file)") from None
    if not isinstance(header, dict):
        raise InputError(f"{label}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start, tensors = 8 + length, {}
    for name, entry in header.items():
        dtype, shape, begin, end = _check_entry(label, name, entry, size - data_start)
        tensors[name] = (dtype, shape, data_start + begin, data_start + end)
    spans = sorted((t[2], t[3], n) for n, t in tensors.items() if t[3] > t[2])
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise InputError(f"{label}: tensors '{a[:80]}' and '{b[:80]}' overlap in the file: refusing")
    return tensors, metadata if isinstance(metadata, dict) else {}, size


def _read_json(base_dir: str, name: str, required: bool) -> dict | None:
    """A small JSON file beside the weights (index, config), opened like external data."""
    try:
        fd, st = safe_open(base_dir, name)
    except InputError:
        if required or os.path.lexists(os.path.join(base_dir, name)):
            raise
        return None
    try:
        if st.st_size > MAX_JSON:
            raise InputError(f"{name}: {st.st_size} bytes is too large for a {name}")
        data = bytes(_read_range(fd, 0, st.st_size, name))
    finally:
        os.close(fd)
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError(f"{name}: not valid JSON") from None
    if not isinstance(value, dict):
        raise InputError(f"{name}: not a JSON object")
    return value


class SafetensorsSource(ModelSource):
    """A .safetensors file, or a folder of shards with model.safetensors.index.json."""

    format = "safetensors"

    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.isdir(path)
        self.base_dir = os.path.abspath(path if folder else os.path.dirname(path) or ".")
        self._files: list[str | None] = []  # shard locations inside base_dir; None = the file itself
        tensors: dict[str, TensorRef] = {}
        if folder:
            self._open_shards(tensors)
        else:
            self._files = [None]
            fd = _open_file(path)
            try:
                self._add_file(fd, None, path, tensors)
            finally:
                os.close(fd)
        self._problems: list[str] = []
        try:
            config = _read_json(self.base_dir, "config.json", required=False)
        except InputError as exc:  # layout hints only: the weights are still audited, and the reader told why
            config = None
            self._problems.append(f"config.json beside the weights not used: {exc}")
        self.arch = Architecture.from_config(config) if config else Architecture()
        self.tensors = [tensors[n] for n in sorted(tensors, key=natural_key)]

    def _open_shards(self, tensors: dict[str, TensorRef]) -> None:
        index = _read_json(self.base_dir, INDEX_NAME, required=False)
        if index is None:
            raise InputError(f"{self.path}: is a directory without {INDEX_NAME} (give the .safetensors file itself)")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise InputError(f"{INDEX_NAME}: no valid weight_map (tensor name -> shard file)")
        for shard in dict.fromkeys(weight_map.values()):
            self._files.append(shard)
            fd, _ = safe_open(self.base_dir, shard)
            try:
                found = self._add_file(fd, shard, shard, tensors)
            finally:
                os.close(fd)
            for name in found:
                if weight_map.get(name) != shard:
                    raise InputError(f"{INDEX_NAME}: tensor '{name[:120]}' is in '{shard}' but the index does not map it there")
        missing = [n for n in weight_map if n not in tensors]
        if missing:
            raise InputError(f"{INDEX_NAME}: tensor '{missing[0][:120]}' is not in its shard '{weight_map[missing[0]]}'")

    def _add_file(self, fd: int, location: str | None, label: str, tensors: dict[str, TensorRef]) -> list[str]:
        header, self.metadata, _size = read_header(fd, label)
        for name, (dtype, shape, begin, end) in header.items():
            if name in tensors:
                raise InputError(f"{label}: tensor '{name[:120]}' is also in another shard: refusing")
            payload = _Payload(self.path, self.base_dir, location, begin, end - begin, dtype)
            tensors[name] = TensorRef(name, shape, dtype, "safetensors", "", payload, self.base_dir)
        return list(header)

    def layers(self, max_memory: int | None = None, read: bool = True) -> list[LayerSpec]:
        return plan_named(self.tensors, self.arch)

    def info(self) -> ModelInfo:
        digest, size = hashlib.sha256(), 0
        for location in self._files:
            fd = safe_open(self.base_dir, location)[0] if location else _open_file(self.path)
            try:
                length = os.fstat(fd).st_size
                for start in range(0, length, 1 << 26):  # 64 MiB at a time: bounded memory
                    digest.update(_read_range(fd, start, min(1 << 26, length - start), self.path))
                size += length
            finally:
                os.close(fd)
        return ModelInfo(
            path=os.path.basename(os.path.normpath(self.path)),
            sha256=digest.hexdigest(),
            size_bytes=size,
            producer="safetensors",
            producer_version=str(self.metadata.get("format", ""))[:100],
            opset={},
            ir_version=0,
            parameters=sum(t.size for t in self.tensors if t.is_float),
            graph_name=self.arch.name,
            external_data=len(self._files) > 1,
        )

    @property
    def problems(self) -> list[str]:
        return self._problems

    @property
    def integrity(self) -> list[IntegrityIssue]:
        return []
