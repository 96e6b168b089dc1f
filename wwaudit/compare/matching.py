"""Which layer of the candidate model is which layer of the base model.

Exporters rename things between versions (`onnx::MatMul_123` becomes `val_45`, `/0/Gemm` becomes
`node_linear`), quantizers rename weights (`w` becomes `w_quantized`) and replace ops (MatMul
becomes MatMulInteger). Matching therefore runs in two passes over the layers that have matrices:

1. by name: the node name, else the tensor name, when it is unique on both sides, is not an
   exporter-generated counter name (those shift when a layer is added), and both layers have the
   same signature (kind, N, M, slices);
2. by structure: the remaining layers, in graph order, are aligned on their signatures with a
   longest-matching-subsequence alignment, so an inserted or removed layer shifts nothing else.

Two layers are comparable only with equal signatures: a difference W₂ − W₁ needs equal shapes.
Everything left over is reported as unmatched on its side. Works on LayerResult fields only.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from wwaudit.records import LayerResult

# Names that exporters generate from an op type and a counter: they identify nothing across versions.
_GENERATED = re.compile(
    r"onnx::.*|_?val_\d+|_v_\d+|node_[A-Za-z]+(_\d+)?|[A-Z][A-Za-z]*_\d+|\d+"
    r"|MatMul|Gemm|Conv|ConvTranspose|Gather|Einsum|LSTM|GRU|RNN|Attention|FusedMatMul"
)


def is_generated_name(name: str) -> bool:
    """True for exporter counter names (onnx::MatMul_12, val_45, node_linear_3, Gemm_0, 123)."""
    return not name or bool(_GENERATED.fullmatch(name))


def signature(layer: LayerResult) -> tuple:
    """What must agree for two layers to be comparable: kind and matrix shapes."""
    return (layer.kind, layer.N, layer.M, layer.slices)


def matchable(layer: LayerResult) -> bool:
    """Layers that have matrices (analysed, unreadable or skipped by a size gate), not biases."""
    return layer.N is not None and layer.kind != "none"


@dataclass
class Pair:
    """One matched layer pair and how it was matched ("name" or "structure")."""

    base: LayerResult
    candidate: LayerResult
    method: str


@dataclass
class Matching:
    """Pairs in base graph order, and the layers of each side that found no counterpart."""

    pairs: list[Pair] = field(default_factory=list)
    unmatched_base: list[LayerResult] = field(default_factory=list)
    unmatched_candidate: list[LayerResult] = field(default_factory=list)


def _unique_by(layers: list[LayerResult], attr: str) -> dict[str, LayerResult]:
    seen: dict[str, list[LayerResult]] = {}
    for layer in layers:
        key = getattr(layer, attr)
        if not is_generated_name(key):
            seen.setdefault(key, []).append(layer)
    return {key: group[0] for key, group in seen.items() if len(group) == 1}


def match_layers(base: list[LayerResult], candidate: list[LayerResult]) -> Matching:
    """Match the matchable layers of two audits: names first, then graph structure."""
    left = [layer for layer in base if matchable(layer)]
    right = [layer for layer in candidate if matchable(layer)]
    paired: dict[int, tuple[LayerResult, str]] = {}  # base layer id -> (candidate layer, method)
    taken: set[int] = set()
    for attr in ("name", "tensor"):
        free_left = [layer for layer in left if layer.id not in paired]
        free_right = [layer for layer in right if layer.id not in taken]
        by_name = _unique_by(free_right, attr)
        own = _unique_by(free_left, attr)
        for key, a in own.items():
            b = by_name.get(key)
            if b is not None and signature(a) == signature(b):
                paired[a.id] = (b, "name")
                taken.add(b.id)
    rest_left = [layer for layer in left if layer.id not in paired]
    rest_right = [layer for layer in right if layer.id not in taken]
    matcher = difflib.SequenceMatcher(None, [signature(x) for x in rest_left], [signature(x) for x in rest_right], autojunk=False)
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            a, b = rest_left[block.a + offset], rest_right[block.b + offset]
            paired[a.id] = (b, "structure")
            taken.add(b.id)
    result = Matching()
    for layer in left:
        if layer.id in paired:
            b, method = paired[layer.id]
            result.pairs.append(Pair(layer, b, method))
        else:
            result.unmatched_base.append(layer)
    result.unmatched_candidate = [layer for layer in right if layer.id not in taken]
    return result
