"""Model sources: one module per file format behind `interface.ModelSource`; `open_source` picks one.

The format is told by the extension, then by the first bytes: a file named `.onnx` is always
read as ONNX (its loader names what a mislabelled file really is). PyTorch pickle checkpoints
(a pickle, or torch.save's zip of pickles, whatever the extension) are refused: unpickling runs
whatever code the file carries, and an auditor of untrusted weights must never do that. An ONNX
model saved as `.bin` is still audited: the content decides, not the name.
"""

from __future__ import annotations

import os

from wwaudit.errors import InputError
from wwaudit.ingest.storage import is_url
from wwaudit.ingest.sources.interface import ModelSource
from wwaudit.ingest.sources.onnx_file import OnnxSource
from wwaudit.ingest.sources.safetensors_file import INDEX_NAME, SafetensorsSource


def _head(path: str) -> bytes:
    """The first bytes of a regular file (b'' when it cannot be read: the ONNX loader says why)."""
    try:
        with open(path, "rb", buffering=0) as fh:
            return fh.read(16) if os.path.isfile(path) else b""
    except OSError:
        return b""


def _pickle_kind(head: bytes) -> str | None:
    """What kind of pickle checkpoint the first bytes show, None for anything else."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive of pickles (torch.save's format)"
    if len(head) > 1 and head[0] == 0x80 and head[1] in (2, 3, 4, 5):
        return "a Python pickle"
    return None


def is_model_folder(path: str) -> bool:
    """A folder that is one model (sharded safetensors with its index), not a folder of models."""
    return os.path.isdir(path) and not os.path.islink(path) and os.path.lexists(os.path.join(path, INDEX_NAME))


def open_source(path: str) -> ModelSource:
    """Open the model at `path` with the reader of its format (InputError for unusable input)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        return OnnxSource(path)
    if is_url(path) and ext in (".safetensors", ".gguf", ".json"):
        raise InputError(f"{path}: safetensors and GGUF models are read from local files only; copy it locally first")
    if is_model_folder(path):
        return SafetensorsSource(path)
    head = _head(path)
    if ext == ".gguf" or head.startswith(b"GGUF"):
        from wwaudit.ingest.sources.gguf_file import GgufSource

        return GgufSource(path)
    if ext == ".safetensors" or (len(head) > 9 and head[8:10] == b'{"'):
        return SafetensorsSource(path)
    kind = _pickle_kind(head)
    if kind is not None:
        raise InputError(
            f"{path}: {kind}, a PyTorch checkpoint (.bin/.pt/.pth/.ckpt): refusing to load it, since unpickling "
            "executes code the file carries; save the weights with safetensors (or export to ONNX) and audit that"
        )
    return OnnxSource(path)


__all__ = ["ModelSource", "OnnxSource", "SafetensorsSource", "is_model_folder", "open_source"]
