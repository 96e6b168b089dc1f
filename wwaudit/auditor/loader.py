"""Open an ONNX file without trusting it: the protobuf only, external data left on disk."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

import onnx
from google.protobuf.message import DecodeError

from wwaudit.errors import InputError

# protobuf refuses messages above 2 GiB; anything larger must keep its weights in external data.
PROTOBUF_LIMIT = 2**31


@dataclass
class LoadedModel:
    """The parsed graph, the folder its external data must come from, and the file's identity."""

    proto: onnx.ModelProto
    path: str
    base_dir: str
    sha256: str
    size_bytes: int


def sha256_of(path: str) -> str:
    """Streaming SHA-256 of a file (models can be large; never read them whole for hashing)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: str) -> LoadedModel:
    """Parse `path` as an ONNX model, raising InputError with one clear sentence on any problem."""
    if not os.path.lexists(path):
        raise InputError(f"{path}: no such file")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, not an ONNX model file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: is not a regular file")
    if st.st_size == 0:
        raise InputError(f"{path}: is empty")
    if st.st_size >= PROTOBUF_LIMIT:
        raise InputError(f"{path}: {st.st_size} bytes exceeds protobuf's 2 GiB limit (use external data)")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InputError(f"{path}: not a valid ONNX model (protobuf decode failed: {exc})") from None
    if not model.HasField("graph"):
        raise InputError(f"{path}: not an ONNX model (no graph found)")
    if not model.opset_import and not model.graph.node:
        raise InputError(f"{path}: not an ONNX model (no opset and no nodes)")
    return LoadedModel(
        proto=model,
        path=path,
        base_dir=os.path.dirname(os.path.abspath(path)),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=st.st_size,
    )
