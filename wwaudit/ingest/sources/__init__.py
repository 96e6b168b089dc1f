"""Model sources: one module per file format behind `interface.ModelSource`; `open_source` picks one."""

from __future__ import annotations

from wwaudit.ingest.sources.interface import ModelSource
from wwaudit.ingest.sources.onnx_file import OnnxSource


def open_source(path: str) -> ModelSource:
    """Open the model at `path` with the reader of its format (InputError for unusable input)."""
    return OnnxSource(path)


__all__ = ["ModelSource", "OnnxSource", "open_source"]
