"""Op handlers: for a weight use, the views it defines (the layer's matrices) or why it is no layer.

One handler per weight-consuming op, looked up by (domain, op type) in HANDLERS; quantized ops
reuse the handler of their float op (QUANT_HANDLERS) once quant.py has planned the dequantization:

- Gemm respects transA/transB; MatMul takes the weight on either side ([in, out] on the right);
  FusedMatMul its trans flags; Einsum when it is a plain matrix product.
- Conv: one (out x in) matrix per kernel position and per group, pooled into one ESD
  (weightwatcher's convention). Depthwise convs have 1x1 matrices per position: skipped.
  ConvTranspose stores (in, out/group, k...): each slice is transposed to (out x in).
- LSTM/GRU/RNN: W [D, G*H, I] and R [D, G*H, H] split per direction and gate.
- Gather on a 2-D float table: an embedding (vocab x hidden).
- com.microsoft Attention: packed [in, 3H] QKV weights split into Q, K and V.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import onnx

from wwaudit.ingest import quant
from wwaudit.ingest.views import View
from wwaudit.ingest.walker import DEFAULT_DOMAINS, Use, WalkResult


RNN_GATES = {
    "LSTM": ("i", "o", "f", "c"),  # ONNX order (torch's i,f,g,o is reordered by the exporter)
    "GRU": ("z", "r", "h"),
    "RNN": ("h",),
}


Handler = Callable[[Use, tuple[int, ...], dict], "list[View] | str"]


def node_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def not_slot(use: Use, what: str = "") -> str:
    label = f"{use.node.domain + ':' if use.node.domain not in DEFAULT_DOMAINS else ''}{use.node.op_type}"
    return f"not a weight slot: {what or 'input ' + str(use.slot)} of {label}"


def _gemm(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot == 2:
        return not_slot(use, "bias C")
    if len(dims) != 2:
        return f"{len(dims)}-D input of Gemm"
    if use.slot == 1:  # B: [K, N] or [N, K] with transB
        return [View("dense", "matrix" if attrs.get("transB", 0) else "matrix_t")]
    return [View("dense", "matrix_t" if attrs.get("transA", 0) else "matrix")]


def matmul_views(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot > 1:
        return not_slot(use)
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
        return not_slot(use, "bias")
    if use.slot != 1:
        return not_slot(use)
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
        return not_slot(use, "bias")
    if use.slot != 1:
        return not_slot(use)
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
        return not_slot(use, names.get(use.slot, f"input {use.slot}"))
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
        return not_slot(use, "indices")
    if len(dims) != 2 or int(attrs.get("axis", 0)) != 0:
        return "Gather on a table that is not a 2-D embedding (axis 0)"
    return [View("embedding", "matrix")]


def attention_views(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    if use.slot != 1:
        return not_slot(use)
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
    ("", "MatMul"): matmul_views,
    ("com.microsoft", "FusedMatMul"): matmul_views,
    ("", "Einsum"): _einsum,
    ("", "Conv"): _conv,
    ("com.microsoft", "FusedConv"): _conv,
    ("", "ConvTranspose"): _conv_transpose,
    ("", "LSTM"): _recurrent,
    ("", "GRU"): _recurrent,
    ("", "RNN"): _recurrent,
    ("", "Gather"): _gather,
    ("com.microsoft", "Attention"): attention_views,
}


# torch's nn.MultiheadAttention keeps Q, K and V in one packed [E, 3E] in_proj weight; both torch
# exporters turn it into MatMul(x, W[E, 3E]) + in_proj_bias. The bias keeps its parameter name.
IN_PROJ_BIAS_SUFFIX = "in_proj_bias"


def in_proj_outputs(walk: WalkResult) -> set[tuple[str, str]]:
    """(scope, tensor) names that an Add combines with an `in_proj_bias`: outputs of packed QKV MatMuls."""
    out: set[tuple[str, str]] = set()
    for use in walk.uses:
        if use.node.op_type == "Add" and use.source.tensor.name.endswith(IN_PROJ_BIAS_SUFFIX):
            out.update((use.scope, name) for name in use.node.input if name and not name.endswith(IN_PROJ_BIAS_SUFFIX))
    return out


def packed_qkv(use: Use, dims: tuple[int, ...], packed_outputs: set[tuple[str, str]]) -> bool:
    """A MatMul right operand [E, 3E] whose output meets an in_proj_bias: split into Q, K and V.

    weightwatcher skips (or analyses as one 3E x E matrix) this packed weight, mixing three
    different projections in one spectrum; each is a layer of its own.
    """
    return (
        use.slot == 1
        and len(dims) == 2
        and dims[1] == 3 * dims[0]
        and any((use.scope, out) in packed_outputs for out in use.node.output)
    )


def gqa_packed_inputs(walk: WalkResult) -> dict[tuple[str, str], tuple[int, int]]:
    """(scope, tensor) names that a GroupQueryAttention takes as packed Q|K|V: (num_heads, kv_num_heads).

    onnxruntime-genai's model builder fuses q_proj, k_proj and v_proj into one `qkv_proj` MatMul
    (MatMulNBits when quantized) whose output, bias Add or not, is the attention's query input
    while its key and value inputs stay empty. Its rows are three projections of different
    sizes under grouped-query attention (num_heads query heads, kv_num_heads key/value heads).
    """
    producers = {(scope, out): node for scope, _pos, node in walk.nodes for out in node.output if out}
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for scope, _pos, node in walk.nodes:
        if node.op_type != "GroupQueryAttention" or node.domain != "com.microsoft":
            continue
        inputs = list(node.input) + ["", "", ""]
        if not inputs[0] or inputs[1] or inputs[2]:
            continue
        attrs = node_attrs(node)
        heads = (int(attrs.get("num_heads", 0)), int(attrs.get("kv_num_heads", 0)))
        names = [inputs[0]]
        producer = producers.get((scope, inputs[0]))
        if producer is not None and producer.op_type == "Add":
            names.extend(name for name in producer.input if name)
        found.update(((scope, name), heads) for name in names)
    return found


def gqa_views(use: Use, dims: tuple[int, ...], packed: dict[tuple[str, str], tuple[int, int]]) -> list[View] | None:
    """Q, K and V views of a packed GroupQueryAttention projection, None when it is not one.

    MatMulNBits weights are (N x K), rows = outputs: split by rows; a float MatMul weight is
    [K, N]: split by columns. Sizes follow from the head counts: N = (heads + 2 kv_heads) x head_size.
    """
    heads = next((packed[(use.scope, out)] for out in use.node.output if (use.scope, out) in packed), None)
    if heads is None or len(dims) != 2:
        return None
    by_rows = use.node.op_type == "MatMulNBits"
    total = dims[0] if by_rows else dims[1]
    q_heads, kv_heads = heads
    if q_heads <= 0 or kv_heads <= 0 or total % (q_heads + 2 * kv_heads):
        return None
    head = total // (q_heads + 2 * kv_heads)
    bounds = (0, q_heads * head, (q_heads + kv_heads) * head, total)
    recipe = "rows" if by_rows else "columns_t"
    return [View("attention", recipe, (bounds[i], bounds[i + 1]), suffix=part) for i, part in enumerate("qkv")]


def _quantized(use: Use, dims: tuple[int, ...], attrs: dict) -> list[View] | str:
    """Dequantized weights of quantized ops have the layout of their float op: reuse its handler."""
    domain = use.node.domain if use.node.domain not in DEFAULT_DOMAINS else ""
    slot = quant.weight_slot(use, domain)
    if slot is None:
        return not_slot(use)
    if slot.float_op in ("MatMulNBits", "MatMulBnb4"):  # already (N x K), rows = outputs
        return [View("dense", "matrix")] if len(dims) == 2 else f"{slot.float_op} weight of shape {list(dims)}"
    if slot.float_op == "Gather":
        attrs = {"axis": attrs.get("gather_axis", 0)}
    float_domain = "com.microsoft" if slot.float_op == "Attention" else ""
    surrogate = onnx.helper.make_node(slot.float_op, [], [], name=use.node.name)
    return HANDLERS[(float_domain, slot.float_op)](replace(use, node=surrogate, slot=slot.float_slot), dims, attrs)


QUANT_HANDLERS: dict[tuple[str, str], Handler] = {key: _quantized for key in quant.WEIGHT_SLOTS}
