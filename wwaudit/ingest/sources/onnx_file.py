"""ONNX models behind the source interface: today's loader, walker and planner, unchanged."""

from __future__ import annotations

import os

from wwaudit.ingest.loader import load_model
from wwaudit.ingest.plan import LayerSpec, plan_layers, safe_name
from wwaudit.ingest.sources.interface import ModelSource
from wwaudit.ingest.walker import walk
from wwaudit.records import IntegrityIssue, ModelInfo


class OnnxSource(ModelSource):
    """An ONNX file: parsed and walked on opening (the protobuf only; external data stays on disk)."""

    format = "onnx"

    def __init__(self, path: str) -> None:
        self.path = path
        self._loaded = load_model(path)  # the tensors read their bytes through this model
        self._walked = walk(self._loaded.proto, self._loaded.base_dir)
        self._walked.problems.extend(self._loaded.problems)

    def layers(self, max_memory: int | None = None, read: bool = True) -> list[LayerSpec]:
        return plan_layers(self._walked, max_memory, read)

    def info(self) -> ModelInfo:
        tensors = self._walked.tensors.values()
        parameters = sum(t.size for t in tensors if t.is_float or (t.is_integer and len(t.dims) >= 2))
        proto = self._loaded.proto
        return ModelInfo(
            path=os.path.basename(self.path),
            sha256=self._loaded.sha256,
            size_bytes=self._loaded.size_bytes,
            producer=safe_name(proto.producer_name),
            producer_version=safe_name(proto.producer_version),
            opset={imp.domain or "ai.onnx": int(imp.version) for imp in proto.opset_import},
            ir_version=int(proto.ir_version),
            parameters=parameters,
            graph_name=safe_name(proto.graph.name),
            external_data=any(t.is_external for t in tensors),
            doc_string=proto.doc_string[:2000],
        )

    @property
    def problems(self) -> list[str]:
        return self._walked.problems

    @property
    def integrity(self) -> list[IntegrityIssue]:
        return self._loaded.integrity
