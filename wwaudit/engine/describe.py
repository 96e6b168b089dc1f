"""`wwaudit describe`: the inventory of a model's tensors, from the header alone.

Every tensor with what an audit would do with it (the layer kind and matrix shapes, or why it
is not analysed), its stored dtype and bytes, and no spectrum: the source is opened and planned
with `read=False`, so no weight is read and a 70B model is described in seconds. The layer ids
and reasons are the audit's own (engine.core.listed_layers), so a describe and an audit of the
same file name the same layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wwaudit.engine.core import listed_layers
from wwaudit.ingest.plan import LayerSpec
from wwaudit.ingest.sources import open_source
from wwaudit.records import LayerResult


@dataclass
class Inventory:
    """The model's tensors as an audit would treat them (schema wwaudit-describe/1)."""

    path: str
    format: str
    entries: list[tuple[LayerResult, int]]  # (the audit's entry, stored bytes of its tensor)
    tensors: int
    parameters: int
    stored_bytes: int
    unlisted: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        layers = [layer for layer, _ in self.entries]
        return {
            "schema": "wwaudit-describe/1",
            "model": {
                "path": self.path,
                "format": self.format,
                "tensors": self.tensors,
                "parameters": self.parameters,
                "stored_bytes": self.stored_bytes,
                "layers": sum(1 for layer in layers if layer.N is not None),
                "analysable": sum(1 for layer in layers if layer.status == "ok"),
                **(
                    {"unlisted_skipped": sum(self.unlisted.values()), "unlisted_skipped_reasons": self.unlisted}
                    if self.unlisted
                    else {}
                ),
            },
            "tensors": [_entry(layer, nbytes) for layer, nbytes in self.entries],
        }


def _entry(layer: LayerResult, nbytes: int) -> dict[str, Any]:
    return {
        "id": layer.id,
        "name": layer.name,
        "op": layer.op,
        "tensor": layer.tensor,
        "shape": layer.shape,
        "dtype": layer.dtype,
        "bytes": nbytes,
        "quantization": layer.quantization,
        "analysed": layer.status == "ok",
        "kind": layer.kind,
        "N": layer.N,
        "M": layer.M,
        "slices": layer.slices,
        "reason": layer.reason,
        "notes": layer.notes,
    }


def describe(path: str) -> Inventory:
    """The inventory of the model at `path` (InputError/UsageError for unusable input); reads no weight."""
    source = open_source(path)
    specs: list[LayerSpec] = source.layers(read=False)
    layers, unlisted = listed_layers(specs)
    tensors = {spec.tensor.key: spec.tensor for spec in specs}
    return Inventory(
        path=path,
        format=source.format,
        entries=[(layer, specs[layer.id].tensor.nbytes) for layer in layers],
        tensors=len(tensors),
        parameters=sum(t.size for t in tensors.values() if t.is_float or (t.is_integer and len(t.dims) >= 2)),
        stored_bytes=sum(t.nbytes for t in tensors.values()),
        unlisted=unlisted,
    )
