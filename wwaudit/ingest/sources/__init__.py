"""Model sources: one module per file format behind `interface.ModelSource`; `open_source` picks one.

The format is told by the extension, then by the first bytes: a file named `.onnx` is always
read as ONNX (its loader names what a mislabelled file really is). PyTorch pickle checkpoints
are refused: unpickling runs whatever code the file carries, and an auditor of untrusted
weights must never do that.
"""

from __future__ import annotations

import os

from wwaudit.errors import InputError
from wwaudit.ingest.sources.interface import ModelSource
from wwaudit.ingest.sources.onnx_file import OnnxSource
from wwaudit.ingest.sources.safetensors_file import INDEX_NAME, SafetensorsSource

PICKLE_EXTENSIONS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _head(path: str) -> bytes:
    """The first bytes of a regular file (b'' when it cannot be read: the ONNX loader says why)."""
    try:
        with open(path, "rb", buffering=0) as fh:
            return fh.read(16) if os.path.isfile(path) else b""
    except OSError:
        return b""


def _is_pickle(head: bytes) -> bool:
    zip_archive = head.startswith(b"PK\x03\x04")  # torch.save's default format: a zip of pickles
    return zip_archive or (len(head) > 1 and head[0] == 0x80 and head[1] in (2, 3, 4, 5))


def open_source(path: str) -> ModelSource:
    """Open the model at `path` with the reader of its format (InputError for unusable input)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        return OnnxSource(path)
    if os.path.isdir(path) and not os.path.islink(path) and os.path.lexists(os.path.join(path, INDEX_NAME)):
        return SafetensorsSource(path)
    head = _head(path)
    if ext == ".gguf" or head.startswith(b"GGUF"):
        from wwaudit.ingest.sources.gguf_file import GgufSource

        return GgufSource(path)
    if ext == ".safetensors" or (len(head) > 9 and head[8:10] == b'{"'):
        return SafetensorsSource(path)
    if ext in PICKLE_EXTENSIONS or _is_pickle(head):
        raise InputError(
            f"{path}: a PyTorch pickle checkpoint: refusing to load it, since unpickling executes code the file "
            "carries; save the weights with safetensors (or export to ONNX) and audit that"
        )
    return OnnxSource(path)


__all__ = ["ModelSource", "OnnxSource", "SafetensorsSource", "open_source"]
