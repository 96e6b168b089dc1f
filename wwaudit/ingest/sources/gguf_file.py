"""GGUF files (llama.cpp) behind the source interface; the header is parsed by the `gguf` package.

`gguf.GGUFReader` parses the header (key/values, tensor infos); every tensor's byte range is then
checked here against the file (inside the data, size as the type and shape need), and values are
read on demand through one memory-mapped range read, never the whole file. Block-quantized types
are dequantized by `ggml.py` (llama.cpp's arithmetic); types it does not know are listed as
skipped with their name. GGUF lists dimensions innermost first: a weight stored as ne = [in, out]
is the (out x in) matrix of torch's nn.Linear.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from wwaudit.errors import InputError
from wwaudit.ingest.plan import LayerSpec
from wwaudit.ingest.sources import ggml
from wwaudit.ingest.sources.interface import ModelSource
from wwaudit.ingest.sources.named import Architecture, plan_named
from wwaudit.ingest.storage import map_range
from wwaudit.ingest.tensors import Payload, TensorRef
from wwaudit.records import IntegrityIssue, ModelInfo

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def _reader(path: str):  # noqa: ANN202 - gguf is optional: its types are not imported at module level
    """gguf.GGUFReader on `path`, or one clear line when the package is absent or the file is bad."""
    try:
        import gguf
    except ImportError:
        raise InputError(f"{path}: reading GGUF needs the optional 'gguf' package: pip install 'wwaudit[gguf]'") from None
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as exc:  # a hostile header can raise anything from the parser: one line, exit 2
        raise InputError(
            f"{path}: not a readable GGUF file: truncated, or its header disagrees with the bytes present "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _read_range(path: str, offset: int, length: int) -> memoryview:
    """The one byte read of this format (a memory map; storage.map_range checks the range)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        return map_range(fd, offset, length, path)
    finally:
        os.close(fd)


@dataclass
class _Payload(Payload):
    path: str
    offset: int
    length: int
    type_name: str
    count: int
    mapped: bool = False

    def read(self) -> np.ndarray:
        raw = np.frombuffer(_read_range(self.path, self.offset, self.length), np.uint8)
        if self.type_name == "BF16":
            return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        if self.type_name in _PLAIN:
            return raw.view(_PLAIN[self.type_name][1])
        if self.type_name not in ggml.BLOCK_TYPES:
            raise InputError(f"{self.path}: GGUF type {self.type_name} cannot be dequantized")
        return ggml.dequantize(raw, self.type_name, self.count)


# Types stored as plain numbers: (ONNX dtype, little-endian numpy dtype of the stored bytes).
_PLAIN: dict[str, tuple[int, np.dtype]] = {
    "F32": (TensorProto.FLOAT, np.dtype("<f4")),
    "F16": (TensorProto.FLOAT16, np.dtype("<f2")),
    "F64": (TensorProto.DOUBLE, np.dtype("<f8")),
    "BF16": (TensorProto.BFLOAT16, np.dtype("<u2")),
    "I8": (TensorProto.INT8, np.dtype("i1")),
    "I16": (TensorProto.INT16, np.dtype("<i2")),
    "I32": (TensorProto.INT32, np.dtype("<i4")),
    "I64": (TensorProto.INT64, np.dtype("<i8")),
}


def _tensor(path: str, size: int, t) -> TensorRef:  # noqa: ANN001 - a gguf.ReaderTensor
    """One tensor info, checked against the file: range inside it, byte count as type and shape need."""
    name = str(t.name)
    type_name = t.tensor_type.name
    dims = tuple(int(d) for d in reversed([int(x) for x in t.shape]))  # numpy order: outermost first
    count = int(np.prod(dims, dtype=object)) if dims else 1
    offset, length = int(t.data_offset), int(t.n_bytes)
    if offset < 0 or offset + length > size:
        raise InputError(
            f"{path}: tensor '{name[:120]}' bytes {offset}..{offset + length} lie beyond the end of the file ({size} bytes)"
        )
    data_type: int
    if type_name in ggml.BLOCK_TYPES:
        per, block_bytes, _ = ggml.BLOCK_TYPES[type_name]
        need = -(-count // per) * block_bytes
        data_type, stored_as, mapped = TensorProto.FLOAT, type_name.lower(), False
    elif type_name in _PLAIN:
        data_type, np_dtype = _PLAIN[type_name]
        need, stored_as, mapped = count * np_dtype.itemsize, None, type_name != "BF16"
    else:  # a type wwaudit cannot dequantize: listed as skipped with its name (TensorRef.unsupported)
        payload = _Payload(path, offset, length, type_name, count)
        return TensorRef(name, dims, TensorProto.UNDEFINED, "gguf", "", payload, os.path.dirname(path), type_name.lower())
    if dims and dims[-1] and type_name in ggml.BLOCK_TYPES and dims[-1] % ggml.BLOCK_TYPES[type_name][0]:
        raise InputError(f"{path}: tensor '{name[:120]}' rows of {dims[-1]} values do not fill whole {type_name} blocks")
    if need != length:
        raise InputError(
            f"{path}: tensor '{name[:120]}' has {length} bytes, its shape {list(dims)} and type {type_name} need {need}"
        )
    payload = _Payload(path, offset, length, type_name, count, mapped)
    return TensorRef(name, dims, data_type, "gguf", "", payload, os.path.dirname(path), stored_as)


class GgufSource(ModelSource):
    """A .gguf file: header parsed on opening, tensors read one at a time."""

    format = "gguf"

    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file" if not os.path.lexists(path) else f"{path}: is not a regular file")
        self.size = os.path.getsize(path)
        reader = _reader(path)
        fields = {name: field for name, field in reader.fields.items()}
        self.arch_name = _string(fields.get("general.architecture"))
        self.version = _string(fields.get("GGUF.version"))
        self.tensors = [_tensor(path, self.size, t) for t in reader.tensors]
        del reader  # its memory map of the whole file is not kept: values are read per tensor

    def layers(self, max_memory: int | None = None, read: bool = True) -> list[LayerSpec]:
        specs = plan_named(self.tensors, Architecture(name=self.arch_name))
        for spec in specs:
            if spec.tensor.stored_as and spec.view is not None:
                spec.notes.append(f"GGUF {spec.tensor.stored_as.upper()}: dequantized as llama.cpp does (float32)")
        return specs

    def info(self) -> ModelInfo:
        digest = hashlib.sha256()
        for start in range(0, self.size, 1 << 26):  # 64 MiB at a time: bounded memory
            digest.update(_read_range(self.path, start, min(1 << 26, self.size - start)))
        return ModelInfo(
            path=os.path.basename(self.path),
            sha256=digest.hexdigest(),
            size_bytes=self.size,
            producer="gguf",
            producer_version=self.version,
            opset={},
            ir_version=0,
            parameters=sum(t.size for t in self.tensors if t.is_float),
            graph_name=self.arch_name,
        )

    @property
    def problems(self) -> list[str]:
        return []

    @property
    def integrity(self) -> list[IntegrityIssue]:
        return []


def _string(field) -> str:  # noqa: ANN001 - a gguf.ReaderField or None
    """A scalar key/value of the header as text ('' when absent)."""
    if field is None or not field.data:
        return ""
    value = field.parts[field.data[0]]
    try:
        text = bytes(value).decode("utf-8") if value.dtype == np.uint8 else str(value[0])
    except (UnicodeDecodeError, IndexError):
        return ""
    return text[:200]
