"""The one interface every model format implements (modelled on pip-audit's `_format/interface.py`).

The engine and `compare` need the same five things from a model whatever file it came in: the
layer plan (LayerSpecs, whose `matrices()` read the weights lazily), the file's identity block
with its parameter count, the structural problems and the payload-integrity issues for the
findings. A format is one module in this package that subclasses `ModelSource`; `open_source`
(the package's entry point) picks the module from the file, so nothing above `ingest` knows
which format it audits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from wwaudit.ingest.plan import LayerSpec
from wwaudit.records import IntegrityIssue, ModelInfo


class ModelSource(ABC):
    """An opened model file. Opening validates the file (InputError with one sentence when it is
    unusable); the weights themselves stay on disk until a LayerSpec's `matrices()` reads them."""

    path: str
    format: str  # "onnx", "safetensors", "gguf"

    @abstractmethod
    def layers(self, max_memory: int | None = None, read: bool = True) -> list[LayerSpec]:
        """Every weight and every other tensor, in file order, as LayerSpecs (analysed or skipped).

        `max_memory` (--max-memory) bounds what planning itself may read (the tied-copy check);
        `read=False` plans from the header alone, reading no weight (`wwaudit describe`).
        """

    @abstractmethod
    def info(self) -> ModelInfo:
        """The identity block of the file (hash, size, producer, parameter count...)."""

    @property
    @abstractmethod
    def problems(self) -> list[str]:
        """Structural defects that leave the weights readable (reported as findings)."""

    @property
    @abstractmethod
    def integrity(self) -> list[IntegrityIssue]:
        """Payload ambiguities (two payloads for one tensor, repeated names...): rules WW020-WW024."""
