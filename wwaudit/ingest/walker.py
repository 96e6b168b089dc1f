"""Walk an ONNX model and find every weight tensor and every op input slot it reaches.

Weights live in graph initializers, sparse initializers, Constant nodes, tensor attributes,
If/Loop/Scan subgraphs (which also read outer-scope names) and model-local functions (whose
formal inputs are bound to the caller's tensors). A weight often reaches its op through
Identity/Cast/Transpose/Reshape/(De)QuantizeLinear: those are followed, and the chain of
transforms is kept so the matrix can be rebuilt exactly as the op sees it.
Slice and Concat are followed too when they only cut and reorder parts of one stored tensor
(TorchScript exports without constant folding reorder LSTM gates that way), so the op that
finally consumes the weight still sees where it came from.
This module only finds; `layers` decides what a use means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

from wwaudit.ingest.tensors import TensorRef, stored_nbytes
from wwaudit.errors import InputError
from wwaudit.records import short_name

MAX_SUBGRAPH_DEPTH = 64
MAX_CONCAT_NESTING = 8
DEFAULT_DOMAINS = ("", "ai.onnx")

# Ops a weight passes through unchanged in substance: followed back to their source tensor.
PASS_THROUGH = {"Identity", "Cast", "CastLike", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
# Ops that turn stored integers into the real weights (or fake-quantize float weights).
QUANT_OPS = {"DequantizeLinear", "QuantizeLinear"}
# Transforms that select part of a tensor: two uses that differ in them are different weights.
SELECTING = {"slice", "concat"}


@dataclass(frozen=True)
class Transform:
    """One step between a stored tensor and the op input: ('transpose', perm), ('reshape', shape)..."""

    op: str
    params: tuple = ()
    # For (de)quantize steps: the scale and zero-point sources (Source or None), kept by object.
    extra: tuple = field(default=(), compare=False)


@dataclass(frozen=True)
class Source:
    """A stored tensor plus the transforms that lead from it to where it is used."""

    tensor: TensorRef
    transforms: tuple[Transform, ...] = ()

    def then(self, step: Transform) -> "Source":
        return Source(self.tensor, self.transforms + (step,))

    @property
    def quantized(self) -> bool:
        return any(t.op in ("dequantize", "quantize") for t in self.transforms)

    @property
    def selection(self) -> tuple[Transform, ...]:
        """The steps that pick parts of the tensor (empty when the op sees all of it)."""
        return tuple(t for t in self.transforms if t.op in SELECTING)


@dataclass
class Use:
    """A source reaching input `slot` of `node` (in traversal order `position`)."""

    source: Source
    node: onnx.NodeProto
    slot: int
    scope: str
    position: int
    opset: int


@dataclass
class WalkResult:
    """Every tensor seen (in file order) and every use of one by an op."""

    tensors: dict[str, TensorRef]
    uses: list[Use]
    first_seen: dict[str, int]
    problems: list[str]
    node_count: int
    # (scope, position, node) of every node visited: lets `quant` follow an integer op's output to
    # the Mul that applies its weight scale (MatMulInteger/ConvInteger from quantize_dynamic).
    nodes: list[tuple[str, int, onnx.NodeProto]] = field(default_factory=list)


class _Walker:
    def __init__(self, model: onnx.ModelProto, base_dir: str) -> None:
        self.model = model
        self.base_dir = base_dir
        self.tensors: dict[str, TensorRef] = {}
        self.uses: list[Use] = []
        self.first_seen: dict[str, int] = {}
        self.problems: list[str] = []
        self.position = 0
        self.node_count = 0
        self.nodes: list[tuple[str, int, onnx.NodeProto]] = []
        self.functions = {(f.domain, f.name): f for f in model.functions}
        # Constants of a function body are one tensor however often the function is called.
        self.function_constants: dict[tuple[str, str, str], Source] = {}
        self.opset = {imp.domain: imp.version for imp in model.opset_import}

    # -- registration -------------------------------------------------------------------------
    def register(self, proto, name: str, dims, data_type: int, origin: str, scope: str) -> Source:
        ref = TensorRef(
            name=name,
            dims=tuple(int(d) for d in dims),
            data_type=int(data_type),
            origin=origin,
            scope=scope,
            proto=proto,
            base_dir=self.base_dir,
        )
        key = ref.key
        if key in self.tensors:
            if len(self.problems) < 100:  # a crafted file can repeat one name 10⁵ times
                self.problems.append(
                    f"duplicate tensor name '{short_name(name)}'" + (f" in {short_name(scope)}" if scope else "")
                )
            suffix = 2
            while f"{key}#{suffix}" in self.tensors:
                suffix += 1
            ref = TensorRef(f"{name}#{suffix}", ref.dims, ref.data_type, origin, scope, proto, self.base_dir)
            key = ref.key
        self.tensors[key] = ref
        self.first_seen.setdefault(key, self.position)
        return Source(ref)

    def register_tensor(self, t: TensorProto, origin: str, scope: str, name: str | None = None) -> Source:
        return self.register(t, name or t.name, t.dims, t.data_type, origin, scope)

    def register_sparse(self, sp: onnx.SparseTensorProto, origin: str, scope: str, name: str | None = None) -> Source:
        return self.register(sp, name or sp.values.name, sp.dims, sp.values.data_type, origin, scope)

    # -- traversal ----------------------------------------------------------------------------
    def walk_graph(self, graph: onnx.GraphProto, env: dict[str, Source], scope: str, depth: int) -> None:
        if depth > MAX_SUBGRAPH_DEPTH:
            raise InputError(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels: refusing")
        env = dict(env)
        if depth:
            # A subgraph's formal inputs (loop counters, scan slices) hide outer names.
            for formal in graph.input:
                env.pop(formal.name, None)
        bound: set[str] = set()
        for init in graph.initializer:
            _bind(env, bound, init.name, self.register_tensor(init, "initializer", scope))
        for sp in graph.sparse_initializer:
            _bind(env, bound, sp.values.name, self.register_sparse(sp, "sparse_initializer", scope))
        self.walk_nodes(graph.node, env, scope, depth)

    def walk_nodes(self, nodes, env: dict[str, Source], scope: str, depth: int, function: tuple | None = None) -> None:
        for index, node in enumerate(nodes):
            self.node_count += 1
            self.position += 1
            self.nodes.append((scope, self.position, node))
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
                if function is not None and node.output:
                    key = function + (node.output[0],)
                    if key not in self.function_constants:
                        self.constant(node, env, scope, index)
                        if node.output[0] in env:
                            self.function_constants[key] = env[node.output[0]]
                    elif node.output[0]:
                        env[node.output[0]] = self.function_constants[key]
                    continue
                self.constant(node, env, scope, index)
                continue
            inputs = [env.get(name) if name else None for name in node.input]
            subgraphs = [a for a in node.attribute if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS)]
            self.attribute_tensors(node, scope)
            fn = self.functions.get((node.domain, node.op_type))
            if node.domain in DEFAULT_DOMAINS and node.op_type in PASS_THROUGH and inputs and inputs[0] is not None:
                self.pass_through(node, inputs, env, scope)
            elif (
                node.op_type in QUANT_OPS
                and node.domain in DEFAULT_DOMAINS + ("com.microsoft",)
                and inputs
                and inputs[0] is not None
            ):
                self.quantize_step(node, inputs, env, scope)
            elif (
                node.op_type in ("Mul", "Sub")
                and node.domain in DEFAULT_DOMAINS
                and _integer_weight_operand(node, inputs) is not None
            ):
                self.rescale_step(node, inputs, env, scope)
            elif node.domain in DEFAULT_DOMAINS and node.op_type == "Slice" and inputs and inputs[0] is not None:
                self.slice_step(node, inputs, env, scope)
            elif node.domain in DEFAULT_DOMAINS and node.op_type == "Concat" and self.same_tensor(inputs):
                self.concat_step(node, inputs, env)
            elif subgraphs:
                self.record_inputs(node, inputs, scope)
                for attr in subgraphs:
                    graphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
                    for k, sub in enumerate(graphs):
                        label = node.name or f"{node.op_type}_{index}"
                        sub_scope = f"{scope}/{label}.{attr.name}" + (f"[{k}]" if len(graphs) > 1 else "")
                        self.walk_graph(sub, env, sub_scope.lstrip("/"), depth + 1)
            elif fn is not None:
                self.call_function(node, fn, inputs, scope, depth)
            else:
                self.record_inputs(node, inputs, scope)

    def record_inputs(self, node: onnx.NodeProto, inputs: list[Source | None], scope: str) -> None:
        opset = self.opset.get(node.domain or "", self.opset.get("ai.onnx", 0))
        for slot, src in enumerate(inputs):
            if src is not None:
                self.uses.append(Use(src, node, slot, scope, self.position, opset))

    def constant(self, node: onnx.NodeProto, env: dict[str, Source], scope: str, index: int) -> None:
        if not node.output:
            return
        out = node.output[0]
        for attr in node.attribute:
            if attr.name == "value" and attr.type == AttributeProto.TENSOR:
                env[out] = self.register_tensor(attr.t, "constant", scope, name=out)
            elif attr.name == "sparse_value" and attr.type == AttributeProto.SPARSE_TENSOR:
                env[out] = self.register_sparse(attr.sparse_tensor, "constant", scope, name=out)
            elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                values = onnx.helper.get_attribute_value(attr)
                dtype = np.float32 if "float" in attr.name else np.int64
                arr = np.asarray(values, dtype=dtype)
                env[out] = self.register_tensor(onnx.numpy_helper.from_array(arr, out), "constant", scope, name=out)

    def attribute_tensors(self, node: onnx.NodeProto, scope: str) -> None:
        """Tensor-valued attributes of ordinary nodes (e.g. ConstantOfShape.value, ai.onnx.ml coefficients)."""
        for attr in node.attribute:
            label = f"{node.name or node.op_type}.{attr.name}"
            if attr.type == AttributeProto.TENSOR:
                self.register_tensor(attr.t, f"attribute of {node.op_type}", scope, name=label)
            elif attr.type == AttributeProto.SPARSE_TENSOR:
                self.register_sparse(attr.sparse_tensor, f"attribute of {node.op_type}", scope, name=label)

    def pass_through(self, node: onnx.NodeProto, inputs: list[Source | None], env: dict[str, Source], scope: str) -> None:
        src = inputs[0]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        step: Transform | None
        if op in ("Identity", "Cast", "CastLike"):
            step = None
        elif op == "Transpose":
            perm = attrs.get("perm")
            step = Transform("transpose", tuple(int(p) for p in perm) if perm else ())
        elif op == "Reshape":
            shape = self.small_constant(inputs[1] if len(inputs) > 1 else None)
            step = Transform("reshape", (tuple(shape), int(attrs.get("allowzero", 0)))) if shape is not None else None
            if shape is None:
                self.record_inputs(node, inputs, scope)
                return
        elif op in ("Squeeze", "Unsqueeze"):
            axes = attrs.get("axes")
            if axes is None and len(inputs) > 1:
                axes = self.small_constant(inputs[1])
            if axes is None and op == "Unsqueeze":
                self.record_inputs(node, inputs, scope)
                return
            step = Transform(op.lower(), tuple(int(a) for a in axes) if axes is not None else ())
        elif op == "Flatten":
            step = Transform("flatten", (int(attrs.get("axis", 1)),))
        else:  # pragma: no cover - PASS_THROUGH and this switch list the same ops
            step = None
        # Parameter inputs of the pass-through op (shape vectors, axes) are consumed there.
        for slot, extra in enumerate(inputs[1:], start=1):
            if extra is not None:
                self.uses.append(Use(extra, node, slot, scope, self.position, 0))
        if node.output:
            env[node.output[0]] = src.then(step) if step is not None else src

    def slice_step(self, node: onnx.NodeProto, inputs: list[Source | None], env: dict[str, Source], scope: str) -> None:
        """Slice with constant bounds: the op downstream sees a known part of the tensor."""
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if len(inputs) > 1:  # opset >= 10: starts, ends, axes, steps are inputs
            params = [self.small_constant(inputs[k]) if len(inputs) > k and inputs[k] is not None else None for k in (1, 2, 3, 4)]
            given = [len(inputs) > k and bool(node.input[k]) for k in (1, 2, 3, 4)]
        else:
            params = [attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None]
            given = [True, True, "axes" in attrs, False]
        if inputs[0].quantized or any(g and p is None for g, p in zip(given, params)) or params[0] is None or params[1] is None:
            self.record_inputs(node, inputs, scope)
            return
        starts, ends, axes, steps = (tuple(int(v) for v in p) if p is not None else () for p in params)
        for slot, extra in enumerate(inputs[1:], start=1):
            if extra is not None:
                self.uses.append(Use(extra, node, slot, scope, self.position, 0))
        if node.output:
            env[node.output[0]] = inputs[0].then(Transform("slice", (starts, ends, axes, steps)))

    @staticmethod
    def same_tensor(inputs: list[Source | None]) -> bool:
        """Concat inputs that are all (parts of) one float tensor, none of them dequantized.

        Concats of concats nest their steps; past MAX_CONCAT_NESTING (never seen in an export,
        easy to forge) the Concat is treated as an ordinary op so shape work stays shallow.
        """
        if len(inputs) < 2 or any(src is None or src.quantized for src in inputs):
            return False
        if max(_concat_nesting(src.transforms) for src in inputs) >= MAX_CONCAT_NESTING:
            return False
        return len({src.tensor.key for src in inputs}) == 1

    def concat_step(self, node: onnx.NodeProto, inputs: list[Source | None], env: dict[str, Source]) -> None:
        """Concat of parts of one tensor (reordered gates): one source whose first step joins the parts."""
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        parts = tuple(src.transforms for src in inputs)
        if node.output:
            env[node.output[0]] = Source(inputs[0].tensor, (Transform("concat", (int(attrs.get("axis", 0)), parts)),))

    def rescale_step(self, node: onnx.NodeProto, inputs: list[Source | None], env: dict[str, Source], scope: str) -> None:
        """Weight-only quantization written as plain ops: Cast(q) [→ Sub(zero point)] → Mul(scale)."""
        slot = _integer_weight_operand(node, inputs)
        weight, const = inputs[slot], inputs[1 - slot]
        self.uses.append(Use(const, node, 1 - slot, scope, self.position, 0))
        if node.output:
            env[node.output[0]] = weight.then(Transform("rescale", (node.op_type.lower(),), extra=(const,)))

    def quantize_step(self, node: onnx.NodeProto, inputs: list[Source | None], env: dict[str, Source], scope: str) -> None:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        scale = inputs[1] if len(inputs) > 1 else None
        zero_point = inputs[2] if len(inputs) > 2 else None
        kind = "dequantize" if node.op_type == "DequantizeLinear" else "quantize"
        params = (int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
        if node.op_type == "QuantizeLinear" and "output_dtype" in attrs:
            params += (int(attrs["output_dtype"]),)
        for slot, extra in enumerate(inputs[1:], start=1):
            if extra is not None:
                self.uses.append(Use(extra, node, slot, scope, self.position, 0))
        if node.output:
            env[node.output[0]] = inputs[0].then(Transform(kind, params, extra=(scale, zero_point)))

    def call_function(self, node: onnx.NodeProto, fn: onnx.FunctionProto, inputs, scope: str, depth: int) -> None:
        if depth > MAX_SUBGRAPH_DEPTH:
            raise InputError(f"functions nested deeper than {MAX_SUBGRAPH_DEPTH} levels: refusing")
        fenv: dict[str, Source] = {}
        for formal, actual in zip(fn.input, inputs):
            if actual is not None:
                fenv[formal] = actual
        label = node.name or node.op_type
        self.walk_nodes(fn.node, fenv, f"{scope}/{label}[{fn.name}]".lstrip("/"), depth + 1, function=(fn.domain, fn.name))

    def small_constant(self, src: Source | None) -> list[int] | None:
        """Values of a small integer constant (a Reshape shape, Squeeze axes), None if not constant."""
        if src is None or src.transforms or not src.tensor.is_integer or src.tensor.size > 64:
            return None
        try:
            return [int(v) for v in np.asarray(src.tensor.load()).reshape(-1)]
        except InputError:
            return None


# onnxruntime (checked with 1.32) keeps initializers of at least this many bytes as their first
# copy when a name repeats, and smaller ones as their last copy (sparse ones count after dense).
ORT_FIRST_COPY_BYTES = 128


def _bind(env: dict[str, Source], bound: set[str], name: str, src: Source) -> None:
    """Bind an initializer name to the copy onnxruntime executes when the name repeats."""
    if name in bound:
        earlier = env[name].tensor
        if (stored_nbytes(earlier.data_type, earlier.size) or 0) >= ORT_FIRST_COPY_BYTES:
            return
    bound.add(name)
    env[name] = src


def _integer_weight_operand(node: onnx.NodeProto, inputs: list[Source | None]) -> int | None:
    """Slot of a stored integer matrix that a Mul scales (or a Sub centres) by a float/integer constant."""
    if len(inputs) != 2 or inputs[0] is None or inputs[1] is None:
        return None
    for slot in (0, 1) if node.op_type == "Mul" else (0,):
        weight, const = inputs[slot], inputs[1 - slot]
        integer_weight = weight.tensor.is_integer and len(weight.tensor.dims) >= 2
        if integer_weight and not weight.quantized and (const.tensor.is_float or node.op_type == "Sub"):
            return slot
    return None


def _concat_nesting(transforms: tuple[Transform, ...]) -> int:
    """How deeply concat steps nest inside each other in a chain of transforms."""
    return max(
        (1 + max((_concat_nesting(part) for part in t.params[1]), default=0) for t in transforms if t.op == "concat"), default=0
    )


def walk(model: onnx.ModelProto, base_dir: str) -> WalkResult:
    """Find every tensor and every use of one in `model` (main graph, subgraphs, functions)."""
    walker = _Walker(model, base_dir)
    walker.walk_graph(model.graph, {}, "", 0)
    for fn in model.functions:
        # Constants inside functions that are never called still belong to the inventory.
        for node in fn.node:
            if (
                node.op_type == "Constant"
                and node.output
                and (fn.domain, fn.name, node.output[0]) not in walker.function_constants
            ):
                walker.constant(node, {}, f"function {fn.domain}.{fn.name}", 0)
    return WalkResult(walker.tensors, walker.uses, walker.first_seen, walker.problems, walker.node_count, walker.nodes)
