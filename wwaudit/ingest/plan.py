"""The layer plan: from the walk's weight uses to the layers to analyse and the tensors skipped.

A layer is the op that consumes a weight in the slot that holds weights: handlers.py says which
slots and which matrices (views.py); a quantized weight is planned as its dequantized form
(quant.py). Each layer's matrices have rows = output features (N x M with N >= M is then only a
matter of which side is longer). A weight used twice is analysed once (shared views, exporter
copies of tied weights); everything else a weight tensor reaches is recorded with the reason it
is not a layer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from wwaudit.errors import InputError
from wwaudit.ingest import quant
from wwaudit.ingest.handlers import (
    HANDLERS,
    QUANT_HANDLERS,
    attention_views,
    gqa_packed_inputs,
    gqa_views,
    in_proj_outputs,
    matmul_views,
    node_attrs,
    packed_qkv,
)
from wwaudit.ingest.tensors import TensorRef, as_float64, stored_nbytes
from wwaudit.ingest.transforms import STEP_OPS, block_reader, materialise, transformed_dims
from wwaudit.ingest.views import View, extract, view_shape
from wwaudit.ingest.walker import DEFAULT_DOMAINS, Source, Use, WalkResult
from wwaudit.streamed import StreamedMatrix


MIN_EVALS = 8


@dataclass
class LayerSpec:
    """A layer to analyse (view set) or a tensor to list as skipped (reason set)."""

    name: str
    op: str
    source: Source
    view: View | None
    position: int
    reason: str | None = None
    used_by: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The tensor sits in an op's weight slot: a layer to audit, also when it is too small, depthwise
    # or pre-packed to analyse (engine coverage counts these; biases, scales and shapes are not weights).
    weight: bool = False

    @property
    def tensor(self) -> TensorRef:
        return self.source.tensor

    @property
    def skipped(self) -> bool:
        return self.view is None

    def shape_info(self) -> tuple[int, int, int]:
        """(N, M, number of slices) without reading any data; N >= M."""
        if self.view is None:
            raise ValueError(f"{self.name} is skipped: it has no matrices")
        dims = transformed_dims(self.tensor.dims, self.source.transforms)
        rows, cols, count = view_shape(dims, self.view)
        return max(rows, cols), min(rows, cols), count

    def matrices(self, widen: bool = True) -> list[np.ndarray]:
        """The layer's (out x in) float64 matrices, read now (the tensor is not kept).

        `widen=False` keeps the stored dtype (views into a memory map for external data), so the
        scheduler's streaming Gram widens chunk by chunk instead of copying a whole table.
        """
        if self.view is None:
            raise ValueError(f"{self.name} is skipped: it has no matrices")
        arr = materialise(self.source)
        mats = extract(arr, self.view)
        return [as_float64(m) for m in mats] if widen else mats

    def streamed(self) -> list[StreamedMatrix] | None:
        """The layer's matrix read in blocks on demand (streamed.py), or None where it must be read whole.

        Views that are the op's input itself, its rows or its transpose qualify, for the weights
        transforms.block_reader reads in blocks. A memory-mapped table is read in whole rows only,
        so it qualifies where its rows are the tall side's rows, which the Gram matrix and the
        structure pass read (an embedding table): its column blocks would read the table once each.
        """
        if self.view is None or self.view.recipe not in ("matrix", "matrix_t", "rows"):
            return None
        dims = self.tensor.dims
        if not self.source.transforms and not (self.view.recipe == "matrix" and len(dims) == 2 and dims[0] >= dims[1]):
            return None
        reader = block_reader(self.source)
        if reader is None:
            return None
        (n, k), dtype, read = reader
        whole = StreamedMatrix((n, k), dtype, read)
        if self.view.recipe == "matrix":
            return [whole]
        if self.view.recipe == "matrix_t":
            return [whole.T]
        start, stop = self.view.params
        rows = range(n)[start:stop]
        return [StreamedMatrix((len(rows), k), dtype, lambda r, c: read(_shift(r, rows.start), c))]


def _shift(rows: slice, by: int) -> slice:
    return slice(rows.start + by, rows.stop + by)


# Names torch's dynamo exporter generates: node_<op>[_N] for nodes, val_N for folded constants.
_DYNAMO_NODE = re.compile(r"node_[A-Za-z0-9_]+")
# onnxruntime-genai's model builder names a weight's node after the module path and the op,
# `/model/layers.3/attn/qkv_proj/MatMul_Q4` (the quantizer appends _Q4): the module path,
# dotted, is the name a reader knows from the checkpoint.
_BUILDER_NODE = re.compile(r"/((?:model|lm_head)(?:/[\w.-]+)*)/(?:MatMul|MatMulNBits|Gather|GatherBlockQuantized)(?:_Q\d+)?")


_GENERATED_TENSOR = re.compile(r"val_\d+|onnx::.*")


def readable_name(node: onnx.NodeProto, tensor: TensorRef) -> str:
    """The node name the exporter gave, else the tensor name; a module path where the exporter recorded one.

    torch's dynamo exporter names every node after its op (`node_linear_2`), which tells a reader
    nothing; the module path it records in the node's metadata (`pkg.torch.onnx.name_scopes`,
    e.g. `encoder.fc1`) does. A node its optimiser rewrote (BatchNorm fused into a conv) carries
    the path of the module that was folded away, so there the parameter name is used instead.
    """
    if not node.name:
        return tensor.name
    builder = _BUILDER_NODE.fullmatch(node.name)
    if builder:
        return builder.group(1).replace("/", ".")
    if not _DYNAMO_NODE.fullmatch(node.name):
        return node.name
    rewritten = any(prop.key == "pkg.onnxscript.rewriter.rule_name" for prop in node.metadata_props)
    path = None if rewritten else _module_path(node)
    if path is None and not _GENERATED_TENSOR.fullmatch(tensor.name):
        return tensor.name
    return path or node.name


def _module_path(node: onnx.NodeProto) -> str | None:
    """'encoder.rnn' from name_scopes "['', 'encoder', 'rnn', 'lstm']" (the last entry is the op)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = re.findall(r"'([^'\\]*)'", prop.value)
            path = ".".join(part for part in scopes[:-1] if part)
            return path or None
    return None


def _skip_reason(tensor: TensorRef, dims: tuple[int, ...] | None = None) -> str | None:
    """Reasons that hold whatever op consumes the tensor (`dims`: the shape the op sees)."""
    dims = tensor.dims if dims is None else dims
    if tensor.unsupported:
        return tensor.unsupported
    if not dims:
        return "scalar"
    if len(dims) == 1:
        return "1-D (bias, norm scale or shape vector)"
    return None


def plan_layers(walk: WalkResult, max_bytes: int | None = None, read: bool = True) -> list[LayerSpec]:
    """Turn the walk into layers and skipped entries, ordered by first use; tied weights merged.

    `max_bytes` (--max-memory) bounds what the tied-copy check may read into memory; `read=False`
    leaves that check out, so planning reads no weight at all (`wwaudit describe`).
    """
    specs: list[LayerSpec] = []
    by_share: dict[tuple, LayerSpec] = {}
    users: dict[tuple, set[str]] = {}
    skipped_reason: dict[str, tuple[int, str, str]] = {}
    layered: set[str] = set()
    weight_slot: set[str] = set()  # skipped tensors that an op takes as its weight
    qindex = quant.QuantIndex(walk)
    packed_outputs = in_proj_outputs(walk)
    gqa_packed = gqa_packed_inputs(walk)
    for use in walk.uses:
        tensor = use.source.tensor
        key = tensor.key
        domain = use.node.domain if use.node.domain not in DEFAULT_DOMAINS else ""
        consumer = readable_name(use.node, tensor)
        use, qnotes, qreason = _dequantized_use(use, domain, qindex)
        try:
            use_dims = transformed_dims(tensor.dims, use.source.transforms)
        except InputError:
            use_dims = tensor.dims
        reason = qreason or _skip_reason(tensor, use_dims)
        views: list[View] | str
        if reason is None:
            reason = _quantized_reason(use, tensor, domain)
        if reason is None:
            handler = HANDLERS.get((domain, use.node.op_type)) or QUANT_HANDLERS.get((domain, use.node.op_type))
            if handler is None:
                op_label = f"{domain + ':' if domain else ''}{use.node.op_type}"
                reason = f"not a weight slot: {op_label} is not a weight-consuming op"
                if math.prod(use_dims) == max(use_dims):  # [1, N] bias rows (skl2onnx, tf2onnx)
                    reason = f"vector of shape {list(use_dims)} (bias, norm scale or shape vector) used by {op_label}"
            else:
                try:
                    dims = transformed_dims(tensor.dims, use.source.transforms)
                    views = handler(use, dims, node_attrs(use.node))
                    if handler is matmul_views and packed_qkv(use, dims, packed_outputs):
                        views = attention_views(use, dims, {})
                    if isinstance(views, list) and gqa_packed:
                        views = gqa_views(use, dims, gqa_packed) or views
                except InputError as exc:
                    views = str(exc)
                if isinstance(views, str):
                    reason = views
                    weight_slot.add(key)
                else:
                    for view in views:
                        share = (key, use.source.selection, view.share_key, view.suffix)
                        if share in by_share:
                            if consumer not in users[share]:  # a set: 10⁵ consumers stay linear
                                users[share].add(consumer)
                                by_share[share].used_by.append(consumer)
                            continue
                        spec = _new_spec(use, view, consumer, qnotes)
                        by_share[share] = spec
                        users[share] = {consumer}
                        specs.append(spec)
                    layered.add(key)
                    continue
        if key not in skipped_reason:
            skipped_reason[key] = (use.position, reason, use.node.op_type)
    for key, tensor in walk.tensors.items():
        if key in layered:
            continue
        if key in skipped_reason:
            position, reason, op = skipped_reason[key]
        else:
            position, reason, op = walk.first_seen.get(key, 0), _skip_reason(tensor) or _unused_reason(tensor), ""
        specs.append(LayerSpec(tensor.name, op, Source(tensor), None, position, reason=reason, weight=key in weight_slot))
    specs.sort(key=lambda s: s.position)
    if read:
        _merge_tied_copies(specs, max_bytes)
    return specs


def _view_name(consumer: str, view: View) -> str:
    """The layer name of one view: `model.layers.3.attn.q_proj` for the Q rows of a packed
    `qkv_proj` (the module names the unfused model has), else `consumer.suffix`."""
    if not view.suffix:
        return consumer
    if view.kind == "attention" and consumer.endswith("qkv_proj"):
        return consumer[: -len("qkv_proj")] + f"{view.suffix}_proj"
    return f"{consumer}.{view.suffix}"


def _new_spec(use: Use, view: View, consumer: str, qnotes: list[str]) -> LayerSpec:
    """The layer of one view of a weight; skipped as too small below MIN_EVALS eigenvalues (still a weight)."""
    name = _view_name(consumer, view)
    spec = LayerSpec(name, use.node.op_type, use.source, view, use.position, used_by=[consumer], weight=True)
    spec.notes.extend(qnotes)
    fold_note = _batchnorm_note(use)
    if fold_note:
        spec.notes.append(fold_note)
    rows_cols = spec.shape_info()
    if rows_cols[1] * rows_cols[2] < MIN_EVALS:
        spec.view, spec.reason = None, f"too small: {rows_cols[1] * rows_cols[2]} eigenvalues < {MIN_EVALS}"
        spec.notes.append(f"shape {rows_cols[0]}x{rows_cols[1]} x {rows_cols[2]} slices")
    return spec


BN_FOLDED_NOTE = "BatchNorm folded into these weights by the exporter: the spectrum includes the BatchNorm scale"


BN_MAYBE_FOLDED_NOTE = (
    "weight created by the exporter's constant folding (TorchScript does this when it folds a BatchNorm "
    "into the conv): the spectrum may include the BatchNorm scale"
)


_TORCHSCRIPT_FOLDED = re.compile(r"onnx::Conv(Transpose)?_\d+")


def _batchnorm_note(use: Use) -> str | None:
    """Say when a conv's weights carry a folded BatchNorm.

    The dynamo exporter's optimiser records FuseBatchNormIntoConv in the fused node's metadata;
    the TorchScript exporter leaves no record but renames the folded weight `onnx::Conv_N`.
    """
    if any("FuseBatchNormIntoConv" in prop.value for prop in use.node.metadata_props):
        return BN_FOLDED_NOTE
    if use.node.op_type in ("Conv", "ConvTranspose") and use.slot == 1 and _TORCHSCRIPT_FOLDED.fullmatch(use.source.tensor.name):
        return BN_MAYBE_FOLDED_NOTE
    return None


def _merge_tied_copies(specs: list[LayerSpec], max_bytes: int | None = None) -> None:
    """Tied embedding / LM head weights that the exporter stored twice are one weight.

    Constant folding gives the head its own transposed copy of the embedding table (torch's
    exporters name it `val_N` or `onnx::MatMul_N`), so the graph no longer shows the tie. An
    analysed 2-D layer whose (out x in) matrix equals an embedding's exactly is that weight: it is
    listed as skipped ("tied copy of ...") and its op is added to the embedding's `used_by`.
    Only layers whose shapes match an embedding's are read, and only when what the comparison
    must hold in memory (in-file and sparse tensors are materialised; external data is mapped)
    fits in `max_bytes`: a crafted pair of sparse 65536 x 65535 tables would otherwise expand
    to 32 GiB before any memory check.
    """
    embeddings = [s for s in specs if s.view is not None and s.view.kind == "embedding" and s.view.recipe == "matrix"]
    if not embeddings:
        return
    for spec in specs:
        if spec.view is None or spec.view.kind == "embedding" or spec.view.recipe not in ("matrix", "matrix_t"):
            continue
        for emb in embeddings:
            if emb.tensor.key == spec.tensor.key or emb.tensor.data_type != spec.tensor.data_type:
                continue
            try:
                if not _same_view_shape(spec, emb):
                    continue
                if max_bytes is not None and _resident_bytes(spec) + _resident_bytes(emb) > max_bytes:
                    spec.notes.append(f"not compared with '{emb.tensor.name}' for a tied copy: above --max-memory")
                    continue
                if not _same_values(spec.matrices(widen=False)[0], emb.matrices(widen=False)[0]):
                    continue
            except InputError:
                continue
            for user in spec.used_by:
                if user not in emb.used_by:
                    emb.used_by.append(user)
            emb.notes.append(f"tied: '{spec.tensor.name}' is an exporter copy of this weight")
            spec.view, spec.reason = None, f"tied copy of '{emb.tensor.name}' (same values, analysed there)"
            break


def _same_view_shape(a: LayerSpec, b: LayerSpec) -> bool:
    """Whether two layers' matrices have the same shape (from the declared shapes, no data)."""
    if a.view is None or b.view is None:
        return False
    return view_shape(transformed_dims(a.tensor.dims, a.source.transforms), a.view) == view_shape(
        transformed_dims(b.tensor.dims, b.source.transforms), b.view
    )


def _resident_bytes(spec: LayerSpec) -> int:
    """Bytes reading the layer's tensor puts in memory: none for memory-mapped external data."""
    tensor = spec.tensor
    if tensor.is_mapped and not spec.source.quantized:
        return 0
    per = stored_nbytes(tensor.data_type, 1) or 8
    return tensor.size * (per + (4 if spec.source.quantized else 0))  # dequantized: a float32 copy too


def _same_values(mine: np.ndarray, theirs: np.ndarray) -> bool:
    """Exact equality, row block by row block: first rows first (untied heads differ at once,
    memory-mapped data is barely read) and no full-size boolean temporary."""
    if mine.shape != theirs.shape or not np.array_equal(mine[:1], theirs[:1]):
        return False
    step = max(1, (1 << 22) // max(1, mine.shape[1] if mine.ndim > 1 else 1))
    for start in range(0, mine.shape[0], step):
        if not np.array_equal(mine[start : start + step], theirs[start : start + step]):
            return False
    return True


def _dequantized_use(use: Use, domain: str, qindex: quant.QuantIndex) -> tuple[Use, list[str], str | None]:
    """A quantized weight use becomes a use of the dequantized weight (`quant` appends the step).

    Returns the use to plan from, notes for the layer, and a reason when the input is a
    quantization parameter or the weight cannot be dequantized.
    """
    if quant.is_param(use, domain, qindex):
        return use, [], f"quantization parameter ({use.source.tensor.dtype}) of {use.node.op_type}"
    try:
        dims = transformed_dims(use.source.tensor.dims, use.source.transforms)
    except InputError:
        return use, [], None  # the shape itself is broken: planning below gives that reason
    try:
        planned = quant.plan_weight(use, domain, dims, qindex)
    except InputError as exc:
        return use, [], f"{use.node.op_type} weight cannot be dequantized: {exc}"
    if planned is None:
        return use, [], None
    source, notes = planned
    return replace(use, source=source), notes, None


def _quantized_reason(use: Use, tensor: TensorRef, domain: str) -> str | None:
    """Integer tensors that reach an op undequantized are indices, shapes or parameters, not weights."""
    if not tensor.is_float and not any(t.op in STEP_OPS for t in use.source.transforms):
        return f"integer tensor ({tensor.dtype}): indices, shapes or quantization parameters"
    return None


def _unused_reason(tensor: TensorRef) -> str:
    if tensor.origin.startswith("attribute"):
        return f"tensor {tensor.origin}"
    return "not consumed by any op"


def storage_dtype(tensor: TensorRef) -> str:
    """dtype as stored in the file (what the report shows next to each layer)."""
    return tensor.dtype


def safe_name(name: str) -> str:
    """Collapse whitespace/control characters of vendor-supplied names for one-line display."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", name)
