"""From weight uses to layers: which op input is a weight slot, and how it becomes matrices.

A layer is the op that consumes a weight in the slot that holds weights. Each layer's matrices
have rows = output features (N x M with N >= M is then only a matter of which side is longer):

- Gemm respects transA/transB; MatMul takes the weight on either side ([in, out] on the right);
  FusedMatMul its trans flags; Einsum when it is a plain matrix product.
- Conv: one (out x in) matrix per kernel position and per group, pooled into one ESD
  (weightwatcher's convention). Depthwise convs have 1x1 matrices per position: skipped.
  ConvTranspose stores (in, out/group, k...): each slice is transposed to (out x in).
- LSTM/GRU/RNN: W [D, G*H, I] and R [D, G*H, H] split per direction and gate.
- Gather on a 2-D float table: an embedding (vocab x hidden).
- com.microsoft Attention: packed [in, 3H] QKV weights split into Q, K and V.
Everything else a weight tensor reaches is recorded with the reason it is not a layer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import onnx

from wwaudit.ingest import quant
from wwaudit.ingest.walker import DEFAULT_DOMAINS, Source, Transform, Use, WalkResult
from wwaudit.ingest.tensors import TensorRef, as_float64, dtype_name, stored_nbytes
from wwaudit.errors import InputError

MIN_EVALS = 8

RNN_GATES = {
    "LSTM": ("i", "o", "f", "c"),  # ONNX order (torch's i,f,g,o is reordered by the exporter)
    "GRU": ("z", "r", "h"),
    "RNN": ("h",),
}


@dataclass(frozen=True)
class View:
    """How a stored tensor becomes (out x in) matrices: a recipe name and its parameters."""

    kind: str  # dense | conv | embedding | recurrent | attention
    recipe: str  # matrix | matrix_t | batched | batched_t | conv | conv_t | gate | columns_t
    params: tuple = ()
    suffix: str = ""

    @property
    def share_key(self) -> tuple:
        """Views that give the same singular values of the same tensor are analysed once."""
        if self.recipe in ("matrix", "matrix_t"):
            return ("matrix",)
        if self.recipe in ("batched", "batched_t"):
            return ("batched",)
        return (self.recipe, self.params)


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

    @property
    def tensor(self) -> TensorRef:
        return self.source.tensor

    @property
    def skipped(self) -> bool:
        return self.view is None

    def shape_info(self) -> tuple[int, int, int]:
        """(N, M, number of slices) without reading any data; N >= M."""
        dims = transformed_dims(self.tensor.dims, self.source.transforms)
        rows, cols, count = view_shape(dims, self.view)
        return max(rows, cols), min(rows, cols), count

    def matrices(self, widen: bool = True) -> list[np.ndarray]:
        """The layer's (out x in) float64 matrices, read now (the tensor is not kept).

        `widen=False` keeps the stored dtype (views into a memory map for external data), so the
        scheduler's streaming Gram widens chunk by chunk instead of copying a whole table.
        """
        arr = materialise(self.source)
        mats = extract(arr, self.view)
        return [as_float64(m) for m in mats] if widen else mats


# ---------------------------------------------------------------------------------------------
# Transforms between the stored tensor and the op input
# ---------------------------------------------------------------------------------------------
def _reshape_dims(dims: tuple[int, ...], shape: tuple[int, ...], allowzero: int) -> tuple[int, ...]:
    out = [dims[i] if (s == 0 and not allowzero and i < len(dims)) else s for i, s in enumerate(shape)]
    total = math.prod(dims)
    if out.count(-1) == 1:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = total // known if known else 0
    if math.prod(out) != total or any(d < 0 for d in out):
        raise InputError(f"cannot reshape a tensor of shape {list(dims)} to {list(shape)}")
    return tuple(out)


def _norm_axes(axes: tuple[int, ...], rank: int) -> list[int]:
    return sorted(a + rank if a < 0 else a for a in axes)


def _slices(dims: tuple[int, ...], params: tuple) -> tuple[slice, ...]:
    """Python slices for an ONNX Slice (starts, ends, axes, steps); numpy clamps as ONNX does."""
    starts, ends, axes, steps = params
    axes = axes or tuple(range(len(starts)))
    steps = steps or (1,) * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)) or any(s == 0 for s in steps):
        raise InputError(f"Slice parameters {list(starts)}, {list(ends)}, {list(axes)}, {list(steps)} do not fit")
    out = [slice(None)] * len(dims)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + len(dims) if axis < 0 else axis
        if not 0 <= axis < len(dims):
            raise InputError(f"Slice axis {axis} outside a tensor of rank {len(dims)}")
        out[axis] = slice(start, end, step)  # Python clamps out-of-range bounds as ONNX does
    return tuple(out)


def _concat_dims(dims: tuple[int, ...], params: tuple) -> tuple[int, ...]:
    axis, parts = params
    shapes = [transformed_dims(dims, part) for part in parts]
    rank = len(shapes[0])
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank or any(len(s) != rank or s[:axis] + s[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :] for s in shapes):
        raise InputError(f"Concat of parts {[list(s) for s in shapes]} along axis {params[0]} does not fit")
    return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1 :]


def transformed_dims(dims: tuple[int, ...], transforms: tuple[Transform, ...]) -> tuple[int, ...]:
    """The shape the op sees, from the stored shape and the pass-through steps."""
    for t in transforms:
        if t.op == "slice":
            dims = tuple(len(range(*sl.indices(d))) for sl, d in zip(_slices(dims, t.params), dims))
        elif t.op == "concat":
            dims = _concat_dims(dims, t.params)
        elif t.op == "transpose":
            perm = t.params or tuple(reversed(range(len(dims))))
            if sorted(perm) != list(range(len(dims))):
                raise InputError(f"Transpose perm {list(perm)} does not fit shape {list(dims)}")
            dims = tuple(dims[p] for p in perm)
        elif t.op == "reshape":
            dims = _reshape_dims(dims, t.params[0], t.params[1])
        elif t.op == "squeeze":
            axes = _norm_axes(t.params, len(dims)) if t.params else [i for i, d in enumerate(dims) if d == 1]
            dims = tuple(d for i, d in enumerate(dims) if i not in axes)
        elif t.op == "unsqueeze":
            out = list(dims)
            for a in _norm_axes(t.params, len(dims) + len(t.params)):
                out.insert(a, 1)
            dims = tuple(out)
        elif t.op == "flatten":
            axis = t.params[0] if t.params[0] >= 0 else t.params[0] + len(dims)
            dims = (math.prod(dims[:axis]), math.prod(dims[axis:]))
        elif t.op in quant.RESHAPING_STEPS:
            dims = quant.step_dims(dims, t)
    return dims


def materialise(source: Source) -> np.ndarray:
    """Read the stored tensor and apply the pass-through steps (quantization is handled by `quant`)."""
    return _apply(source.tensor.load(), source.transforms)


def _apply(arr: np.ndarray, transforms: tuple[Transform, ...]) -> np.ndarray:
    dims = tuple(arr.shape)
    for t in transforms:
        new_dims = transformed_dims(dims, (t,))
        if t.op == "slice":
            arr = arr[_slices(dims, t.params)]
        elif t.op == "concat":
            axis = t.params[0] + len(new_dims) if t.params[0] < 0 else t.params[0]
            arr = np.concatenate([_apply(arr, part) for part in t.params[1]], axis=axis)
        elif t.op == "transpose":
            arr = np.transpose(arr, t.params or None)
        elif t.op in ("reshape", "squeeze", "unsqueeze", "flatten"):
            arr = arr.reshape(new_dims)
        elif t.op in quant.STEP_OPS:
            arr = quant.apply_step(arr, t, materialise)
        dims = new_dims
    return arr


# ---------------------------------------------------------------------------------------------
# Views: shapes (without data) and extraction
# ---------------------------------------------------------------------------------------------
def view_shape(dims: tuple[int, ...], view: View) -> tuple[int, int, int]:
    """(rows, cols, slices) of the matrices `extract` will give for a tensor of shape `dims`."""
    r = view.recipe
    if r == "matrix":
        return dims[0], dims[1], 1
    if r == "matrix_t":
        return dims[1], dims[0], 1
    if r in ("batched", "batched_t"):
        count = math.prod(dims[:-2])
        a, b = dims[-2], dims[-1]
        return (a, b, count) if r == "batched" else (b, a, count)
    if r == "conv":
        groups = view.params[0]
        return dims[0] // groups, dims[1], groups * math.prod(dims[2:])
    if r == "conv_t":
        groups = view.params[0]
        return dims[1], dims[0] // groups, groups * math.prod(dims[2:])
    if r == "gate":
        _direction, _gate, hidden = view.params
        return hidden, dims[2], 1
    if r == "columns_t":
        start, stop = view.params
        return stop - start, dims[0], 1
    raise ValueError(f"unknown view recipe {r}")


def extract(arr: np.ndarray, view: View) -> list[np.ndarray]:
    """The (out x in) matrices of a view, as views into `arr` where numpy allows."""
    r = view.recipe
    if r == "matrix":
        return [arr]
    if r == "matrix_t":
        return [arr.T]
    if r in ("batched", "batched_t"):
        stack = arr.reshape((-1,) + arr.shape[-2:])
        return [m if r == "batched" else m.T for m in stack]
    if r in ("conv", "conv_t"):
        groups = view.params[0]
        per = arr.shape[0] // groups
        kernel = arr.reshape(arr.shape[0], arr.shape[1], -1)
        out = []
        for g in range(groups):
            block = kernel[g * per : (g + 1) * per]
            for pos in range(block.shape[2]):
                m = block[:, :, pos]
                out.append(m if r == "conv" else m.T)
        return out
    if r == "gate":
        direction, gate, hidden = view.params
        return [arr[direction, gate * hidden : (gate + 1) * hidden, :]]
    if r == "columns_t":
        start, stop = view.params
        return [arr[:, start:stop].T]
    raise ValueError(f"unknown view recipe {r}")


# ---------------------------------------------------------------------------------------------
# Op handlers: given a use, the views it defines or the reason it is not a weight slot
# ---------------------------------------------------------------------------------------------
Handler = Callable[[Use, tuple[int, ...], dict], "list[View] | str"]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _not_slot(use: Use, what: str = "") -> str:
    label = f"{use.node.domain + ':' if use.node.domain not in DEFAULT_DOMAINS else ''}{use.node.op_type}"
    return f"not a weight slot: {what or 'input ' + str(use.slot)} of {label}"


def _gemm(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot == 2:
        return _not_slot(use, "bias C")
    if len(dims) != 2:
        return f"{len(dims)}-D input of Gemm"
    if use.slot == 1:  # B: [K, N] or [N, K] with transB
        return [View("dense", "matrix" if attrs.get("transB", 0) else "matrix_t")]
    return [View("dense", "matrix_t" if attrs.get("transA", 0) else "matrix")]


def _matmul(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot > 1:
        return _not_slot(use)
    if len(dims) < 2:
        return "1-D operand of MatMul (a vector, not a matrix)"
    trans = attrs.get("transB" if use.slot == 1 else "transA", 0)
    # Right operand [in, out] -> transpose to (out x in); left operand is already (out x in).
    flip = (use.slot == 1) != bool(trans)
    if len(dims) == 2:
        return [View("dense", "matrix_t" if flip else "matrix")]
    return [View("dense", "batched_t" if flip else "batched")]


def _einsum(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    eq = attrs.get("equation", b"")
    eq = eq.decode() if isinstance(eq, bytes) else str(eq)
    eq = eq.replace(" ", "")
    if "->" not in eq or "..." in eq:
        return "Einsum operand is not a plain 2-D matrix product"
    lhs, out = eq.split("->")
    operands = lhs.split(",")
    if len(operands) != 2 or use.slot > 1 or len(dims) != 2 or len(operands[use.slot]) != 2:
        return "Einsum operand is not a plain 2-D matrix product"
    mine, other = operands[use.slot], operands[1 - use.slot]
    contracted = [c for c in mine if c in other.replace("...", "") and c not in out]
    kept = [c for c in mine if c in out and c not in other]
    if len(contracted) != 1 or len(kept) != 1:
        return "Einsum operand is not a plain 2-D matrix product"
    # rows must be the kept (output) index
    return [View("dense", "matrix" if mine.index(kept[0]) == 0 else "matrix_t")]


def _conv(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot == 2:
        return _not_slot(use, "bias")
    if use.slot != 1:
        return _not_slot(use)
    if len(dims) < 3:
        return f"Conv weight of rank {len(dims)}"
    groups = int(attrs.get("group", 1))
    if groups < 1 or dims[0] % groups:
        return f"Conv group={groups} does not divide {dims[0]} output channels"
    if dims[1] == 1 and groups > 1:
        return "depthwise conv: 1 input channel per group, its per-position matrices are 1x1"
    return [View("conv", "conv", (groups,))]


def _conv_transpose(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot == 2:
        return _not_slot(use, "bias")
    if use.slot != 1:
        return _not_slot(use)
    if len(dims) < 3:
        return f"ConvTranspose weight of rank {len(dims)}"
    groups = int(attrs.get("group", 1))
    if groups < 1 or dims[0] % groups:
        return f"ConvTranspose group={groups} does not divide {dims[0]} input channels"
    if dims[1] == 1 and groups > 1 and dims[0] == groups:
        return "depthwise transposed conv: 1 channel per group, its per-position matrices are 1x1"
    return [View("conv", "conv_t", (groups,))]


def _recurrent(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot not in (1, 2):
        names = {3: "bias B", 4: "sequence_lens", 5: "initial_h", 6: "initial_c", 7: "peepholes P"}
        return _not_slot(use, names.get(use.slot, f"input {use.slot}"))
    gates = RNN_GATES[use.node.op_type]
    if len(dims) != 3 or dims[1] % len(gates):
        return f"{use.node.op_type} weight of shape {list(dims)} is not [directions, gates*hidden, in]"
    hidden = dims[1] // len(gates)
    which = "W" if use.slot == 1 else "R"
    views = []
    for d in range(dims[0]):
        for g, gate in enumerate(gates):
            direction = "" if dims[0] == 1 else (".fwd" if d == 0 else ".bwd")
            views.append(View("recurrent", "gate", (d, g, hidden), suffix=f"{which}{direction}.{gate}"))
    return views


def _gather(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot != 0:
        return _not_slot(use, "indices")
    if len(dims) != 2 or int(attrs.get("axis", 0)) != 0:
        return "Gather on a table that is not a 2-D embedding (axis 0)"
    return [View("embedding", "matrix")]


def _attention(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot != 1:
        return _not_slot(use)
    if len(dims) != 2:
        return "Attention weights that are not a 2-D [in, 3*hidden] matrix"
    sizes = attrs.get("qkv_hidden_sizes") or [dims[1] // 3] * 3
    if sum(sizes) != dims[1]:
        return f"Attention qkv_hidden_sizes {list(sizes)} do not add up to {dims[1]}"
    views, start = [], 0
    for part, size in zip("qkv", sizes):
        views.append(View("attention", "columns_t", (start, start + int(size)), suffix=part))
        start += int(size)
    return views


HANDLERS: dict[tuple[str, str], Handler] = {
    ("", "Gemm"): _gemm,
    ("", "MatMul"): _matmul,
    ("com.microsoft", "FusedMatMul"): _matmul,
    ("", "Einsum"): _einsum,
    ("", "Conv"): _conv,
    ("com.microsoft", "FusedConv"): _conv,
    ("", "ConvTranspose"): _conv_transpose,
    ("", "LSTM"): _recurrent,
    ("", "GRU"): _recurrent,
    ("", "RNN"): _recurrent,
    ("", "Gather"): _gather,
    ("com.microsoft", "Attention"): _attention,
}


# Names torch's dynamo exporter generates: node_<op>[_N] for nodes, val_N for folded constants.
_DYNAMO_NODE = re.compile(r"node_[A-Za-z0-9_]+")
_GENERATED_TENSOR = re.compile(r"val_\d+|onnx::.*")


def readable_name(node: onnx.NodeProto, tensor: TensorRef) -> str:
    """The node name the exporter gave, else the tensor name.

    torch's dynamo exporter names every node after its op (`node_linear_2`), which tells a reader
    nothing; the module path it records in the node's metadata (`pkg.torch.onnx.name_scopes`,
    e.g. `encoder.fc1`) does. A node its optimiser rewrote (BatchNorm fused into a conv) carries
    the path of the module that was folded away, so there the parameter name is used instead.
    """
    if not node.name:
        return tensor.name
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


# torch's nn.MultiheadAttention keeps Q, K and V in one packed [E, 3E] in_proj weight; both torch
# exporters turn it into MatMul(x, W[E, 3E]) + in_proj_bias. The bias keeps its parameter name.
IN_PROJ_BIAS_SUFFIX = "in_proj_bias"


def _in_proj_outputs(walk: WalkResult) -> set[tuple[str, str]]:
    """(scope, tensor) names that an Add combines with an `in_proj_bias`: outputs of packed QKV MatMuls."""
    out = set()
    for use in walk.uses:
        if use.node.op_type == "Add" and use.source.tensor.name.endswith(IN_PROJ_BIAS_SUFFIX):
            out.update((use.scope, name) for name in use.node.input if name and not name.endswith(IN_PROJ_BIAS_SUFFIX))
    return out


def _packed_qkv(use: Use, dims: tuple[int, ...], packed_outputs: set[tuple[str, str]]) -> bool:
    """A MatMul right operand [E, 3E] whose output meets an in_proj_bias: split into Q, K and V.

    weightwatcher skips (or analyses as one 3E x E matrix) this packed weight, mixing three
    different projections in one spectrum; each is a layer of its own.
    """
    return (use.slot == 1 and len(dims) == 2 and dims[1] == 3 * dims[0]
            and any((use.scope, out) in packed_outputs for out in use.node.output))


def plan_layers(walk: WalkResult, max_bytes: int | None = None) -> list[LayerSpec]:
    """Turn the walk into layers and skipped entries, ordered by first use; tied weights merged.

    `max_bytes` (--max-memory) bounds what the tied-copy check may read into memory.
    """
    specs: list[LayerSpec] = []
    by_share: dict[tuple, LayerSpec] = {}
    users: dict[tuple, set[str]] = {}
    skipped_reason: dict[str, tuple[int, str, str]] = {}
    layered: set[str] = set()
    qindex = quant.QuantIndex(walk)
    packed_outputs = _in_proj_outputs(walk)
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
                    views = handler(use, dims, _attrs(use.node))
                    if handler is _matmul and _packed_qkv(use, dims, packed_outputs):
                        views = _attention(use, dims, {})
                except InputError as exc:
                    views = str(exc)
                if isinstance(views, str):
                    reason = views
                else:
                    for view in views:
                        share = (key, use.source.selection, view.share_key, view.suffix)
                        if share in by_share:
                            if consumer not in users[share]:  # a set: 10⁵ consumers stay linear
                                users[share].add(consumer)
                                by_share[share].used_by.append(consumer)
                            continue
                        name = consumer + (f".{view.suffix}" if view.suffix else "")
                        spec = LayerSpec(name, use.node.op_type, use.source, view, use.position, used_by=[consumer])
                        spec.notes.extend(qnotes)
                        fold_note = _batchnorm_note(use)
                        if fold_note:
                            spec.notes.append(fold_note)
                        rows_cols = spec.shape_info()
                        if rows_cols[1] * rows_cols[2] < MIN_EVALS:
                            spec.view, spec.reason = None, f"too small: {rows_cols[1] * rows_cols[2]} eigenvalues < {MIN_EVALS}"
                            spec.notes.append(f"shape {rows_cols[0]}x{rows_cols[1]} x {rows_cols[2]} slices")
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
        specs.append(LayerSpec(tensor.name, op, Source(tensor), None, position, reason=reason))
    specs.sort(key=lambda s: s.position)
    _merge_tied_copies(specs, max_bytes)
    return specs


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
    return view_shape(transformed_dims(a.tensor.dims, a.source.transforms), a.view) == view_shape(
        transformed_dims(b.tensor.dims, b.source.transforms), b.view)


def _resident_bytes(spec: LayerSpec) -> int:
    """Bytes reading the layer's tensor puts in memory: none for memory-mapped external data."""
    tensor = spec.tensor
    if tensor.is_external and not spec.source.quantized:
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


def _quantized(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    """Dequantized weights of quantized ops have the layout of their float op: reuse its handler."""
    domain = use.node.domain if use.node.domain not in DEFAULT_DOMAINS else ""
    slot = quant.weight_slot(use, domain)
    if slot is None:
        return _not_slot(use)
    if slot.float_op in ("MatMulNBits", "MatMulBnb4"):  # already (N x K), rows = outputs
        return [View("dense", "matrix")] if len(dims) == 2 else f"{slot.float_op} weight of shape {list(dims)}"
    if slot.float_op == "Gather":
        attrs = {"axis": attrs.get("gather_axis", 0)}
    float_domain = "com.microsoft" if slot.float_op == "Attention" else ""
    surrogate = onnx.helper.make_node(slot.float_op, [], [], name=use.node.name)
    return HANDLERS[(float_domain, slot.float_op)](replace(use, node=surrogate, slot=slot.float_slot), dims, attrs)


QUANT_HANDLERS: dict[tuple[str, str], Handler] = {key: _quantized for key in quant.WEIGHT_SLOTS}


def _quantized_reason(use: Use, tensor: TensorRef, domain: str) -> str | None:
    """Integer tensors that reach an op undequantized are indices, shapes or parameters, not weights."""
    if not tensor.is_float and not any(t.op in quant.STEP_OPS for t in use.source.transforms):
        return f"integer tensor ({tensor.dtype}): indices, shapes or quantization parameters"
    return None


def _unused_reason(tensor: TensorRef) -> str:
    if tensor.origin.startswith("attribute"):
        return f"tensor {tensor.origin}"
    return "not consumed by any op"


def storage_dtype(tensor: TensorRef) -> str:
    """dtype as stored in the file (what the report shows next to each layer)."""
    return dtype_name(tensor.data_type)


def safe_name(name: str) -> str:
    """Collapse whitespace/control characters of vendor-supplied names for one-line display."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", name)
