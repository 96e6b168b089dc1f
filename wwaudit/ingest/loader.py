"""Open an ONNX file without trusting it: the protobuf only, external data left on disk.

Everything a crafted or broken file can do wrong at the file level ends here as an InputError
with one sentence that names the problem (the CLI prints it and exits 2): missing, a folder, a
device or FIFO, empty, unreadable, too large for protobuf, another format (PyTorch zip, pickle,
HDF5, safetensors, TFLite, GGUF), truncated or nested beyond protobuf's depth limit, no graph,
and external data that is unsafe (a location escaping the model's folder by '..', an absolute
path, a symbolic link or a hard link) or missing. Problems that spoil one tensor only (offset
beyond the end of the data file, a length that disagrees with the shape) are left to the tensor's
read, so the rest of the model can still be audited. Structural defects that do not stop the
weights from being read (cycles, dangling inputs, one output produced twice) are returned as
`problems` for the findings.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from typing import Iterator

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import AttributeProto, TensorProto

from wwaudit.ingest.storage import PROTOBUF_LIMIT, is_url, local_path, model_base, open_data, read_remote_model
from wwaudit.ingest.tensors import parse_external
from wwaudit.errors import InputError
from wwaudit.ingest.integrity import integrity_issues
from wwaudit.records import IntegrityIssue, short_name

# At most this many names are quoted per structural problem (a broken graph may have thousands).
MAX_NAMES_QUOTED = 5
# Nodes the walker may visit with every function call expanded (the largest exported LLMs have
# well under 100,000 nodes; a crafted chain of functions can reach billions).
MAX_EXPANDED_NODES = 1_000_000
# Functions calling functions deeper than this are refused (the walker's own nesting limit):
# the expansion count below recurses once per level, so the bound also keeps it far from
# Python's recursion limit whatever chain length a file declares.
MAX_CALL_DEPTH = 64
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)

# (magic test, what the file probably is): a wrong file given by mistake gets a useful message.
_SIGNATURES = (
    (lambda b: b.startswith(b"PK\x03\x04"), "a ZIP archive (a PyTorch .pt/.pth checkpoint, a Keras or NumPy .npz file?)"),
    (lambda b: len(b) > 1 and b[0] == 0x80 and b[1] in (2, 3, 4, 5), "a Python pickle (a PyTorch or scikit-learn checkpoint?)"),
    (lambda b: b.startswith(b"\x89HDF\r\n\x1a\n"), "an HDF5 file (a Keras .h5 model?)"),
    (lambda b: b[4:8] == b"TFL3", "a TensorFlow Lite flatbuffer"),
    (lambda b: b.startswith(b"GGUF"), "a GGUF file (llama.cpp)"),
    (lambda b: len(b) > 9 and b[8:10] == b'{"' and int.from_bytes(b[:8], "little") < 1 << 30, "a safetensors file"),
    (lambda b: b.lstrip()[:1] in (b"{", b"["), "a JSON document"),
    (lambda b: b.startswith(b"\x1f\x8b"), "a gzip archive"),
)


@dataclass
class LoadedModel:
    """The parsed graph, the folder its external data must come from, and the file's identity."""

    proto: onnx.ModelProto
    path: str
    base_dir: str
    sha256: str
    size_bytes: int
    # Structural defects that do not stop the weights from being read (reported as findings).
    problems: list[str] = field(default_factory=list)
    # Payload ambiguities (two payloads, repeated names, overridable initializers...): rules WW020-WW024.
    integrity: list[IntegrityIssue] = field(default_factory=list)


def _read_model_file(path: str) -> bytes:
    """The file's bytes, checked on the open descriptor (no race between check and read)."""
    if not os.path.lexists(path):
        raise InputError(f"{path}: no such file")
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (a dangling symbolic link?)") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an ONNX model file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: is a directory, not an ONNX model file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: is not a regular file (a device, FIFO or socket)")
        if st.st_size == 0:
            raise InputError(f"{path}: is empty (0 bytes)")
        if st.st_size >= PROTOBUF_LIMIT:
            raise InputError(f"{path}: {st.st_size} bytes exceeds protobuf's 2 GiB limit (use external data)")
        with io.FileIO(fd, "r", closefd=False) as fh:
            return fh.readall()  # sized from fstat: one buffer, no copies
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an ONNX model file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _not_onnx(path: str, data: bytes, detail: str) -> InputError:
    """The most useful sentence for a file that is not a usable ONNX model."""
    ext = os.path.splitext(path)[1].lower()
    hint = f"; its extension is '{ext}', not '.onnx'" if ext != ".onnx" else ""
    for test, what in _SIGNATURES:
        if test(data[:64]):
            return InputError(f"{path}: not an ONNX model: this looks like {what}{hint}")
    return InputError(f"{path}: not a valid ONNX model ({detail}){hint}")


def load_model(path: str) -> LoadedModel:
    """Parse `path` (a file, a file:// URL or an object-store URL) as an ONNX model, raising
    InputError with one clear sentence on any problem."""
    path = local_path(path)
    data = read_remote_model(path) if is_url(path) else _read_model_file(path)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        message = str(exc)
        if "depth" in message.lower() or "recursion" in message.lower():
            raise InputError(f"{path}: messages (subgraphs) nested deeper than protobuf's depth limit: refusing") from None
        raise _not_onnx(path, data, "protobuf decode failed: truncated or corrupt file") from None
    if not model.HasField("graph"):
        raise _not_onnx(path, data, "no graph found")
    if not model.opset_import and not model.graph.node:
        raise _not_onnx(path, data, "no opset and no nodes")
    bad_field = first_invalid_string(model)
    if bad_field:
        raise InputError(f"{path}: not a valid ONNX model: the string field {bad_field} is not valid UTF-8")
    base_dir = model_base(path)
    check_expansion(model)
    check_external_files(model, base_dir)
    return LoadedModel(
        proto=model,
        path=path,
        base_dir=base_dir,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        problems=structure_problems(model.graph),
        integrity=integrity_issues(model, list(all_tensors(model))),
    )


def first_invalid_string(message: Message) -> str | None:
    """Name of the first string field holding invalid UTF-8, else None.

    ONNX is a proto2 schema, and protobuf's upb parser hands such fields to Python as `bytes`
    instead of refusing them: every name would then break string handling far from here.
    Iterative, and it skips tensor payloads (bytes fields), so it costs one pass over the
    message structure, not over the weights.
    """
    stack = [message]
    while stack:
        msg = stack.pop()
        for desc, value in msg.ListFields():
            if desc.type == FieldDescriptor.TYPE_STRING:
                values = (value,) if isinstance(value, (str, bytes)) else value
                if any(not isinstance(v, str) for v in values):
                    return desc.full_name
            elif desc.type == FieldDescriptor.TYPE_MESSAGE:
                if isinstance(value, Message):
                    stack.append(value)
                else:
                    stack.extend(value)
    return None


# ---------------------------------------------------------------------------------------------
# External data: every referenced file is opened once, here, before any analysis
# ---------------------------------------------------------------------------------------------
def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[TensorProto]:
    for attr in node.attribute:
        if attr.type == AttributeProto.TENSOR:
            yield attr.t
        elif attr.type == AttributeProto.TENSORS:
            yield from attr.tensors
        elif attr.type == AttributeProto.SPARSE_TENSOR:
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        elif attr.type == AttributeProto.SPARSE_TENSORS:
            for sp in attr.sparse_tensors:
                yield sp.values
                yield sp.indices


def all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto of the model: graphs, subgraphs at any depth, attributes, functions.

    Iterative (an explicit stack), so nesting depth is bounded by protobuf's parser, not by
    Python's recursion limit.
    """
    graphs = [model.graph]
    for fn in model.functions:
        for node in fn.node:
            yield from _node_tensors(node)
            graphs.extend(_subgraphs(node))
    while graphs:
        graph = graphs.pop()
        yield from _graph_tensors(graph)
        for node in graph.node:
            graphs.extend(_subgraphs(node))


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    found = []
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            found.append(attr.g)
        elif attr.type == AttributeProto.GRAPHS:
            found.extend(attr.graphs)
    return found


def check_external_files(model: onnx.ModelProto, base_dir: str) -> None:
    """Refuse the model when any external-data reference is unsafe or its file is missing
    (`base_dir`: the model's folder or URL prefix).

    A location that escapes the model's folder is an attack or a packaging error either way, and
    a missing data file means the model was copied without its weights: both make the audit
    meaningless, so they stop it (exit 2) rather than turning into per-layer errors.
    """
    seen: set[str] = set()
    for tensor in all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = parse_external(tensor).location
        if location in seen:
            continue
        seen.add(location)
        try:
            open_data(base_dir, location).close()
        except InputError as exc:
            raise InputError(f"tensor '{tensor.name}': {exc}") from None


# ---------------------------------------------------------------------------------------------
# Model-local functions: each call is walked, so a few hundred bytes can expand exponentially
# ---------------------------------------------------------------------------------------------
def check_expansion(model: onnx.ModelProto, limit: int = MAX_EXPANDED_NODES) -> int:
    """Number of nodes the graph has with every function call expanded; refuses recursion and
    expansions above `limit` (F0 calling F1 twice, F1 calling F2 twice... is 2^depth nodes).

    Computed on the call graph with memoisation, so it costs one pass over the file however
    large the expansion would be.
    """
    functions = {(f.domain, f.name): f for f in model.functions}
    sizes: dict[tuple[str, str], int] = {}
    active: set[tuple[str, str]] = set()

    def nodes_size(nodes) -> int:
        total = 0
        stack = [list(nodes)]
        while stack:
            for node in stack.pop():
                total += 1
                key = (node.domain, node.op_type)
                if key in functions:
                    total += function_size(key)
                for sub in _subgraphs(node):
                    stack.append(list(sub.node))
                if total > limit:
                    return total
        return total

    def function_size(key: tuple[str, str]) -> int:
        if key in sizes:
            return sizes[key]
        if key in active:
            raise InputError(f"function '{key[0]}.{key[1]}' calls itself (directly or through other functions): refusing")
        if len(active) >= MAX_CALL_DEPTH:
            raise InputError(f"functions call each other more than {MAX_CALL_DEPTH} levels deep: refusing")
        active.add(key)
        sizes[key] = min(nodes_size(functions[key].node), limit + 1)
        active.discard(key)
        return sizes[key]

    total = nodes_size(model.graph.node)
    if total > limit:
        raise InputError(
            f"the graph expands to more than {limit} nodes once its functions are inlined "
            "(functions calling each other repeatedly): refusing"
        )
    return total


# ---------------------------------------------------------------------------------------------
# Structure: cycles, dangling inputs, outputs produced twice
# ---------------------------------------------------------------------------------------------
def _quote(names: list[str]) -> str:
    shown = ", ".join(f"'{short_name(n, 120)}'" for n in names[:MAX_NAMES_QUOTED])
    return shown + (f" and {len(names) - MAX_NAMES_QUOTED} more" if len(names) > MAX_NAMES_QUOTED else "")


def structure_problems(graph: onnx.GraphProto, outer: frozenset[str] = frozenset(), scope: str = "") -> list[str]:
    """Defects of the node graph that ONNX forbids but that leave the weights readable.

    A cycle (nodes that wait on each other's outputs), inputs that nothing produces, and names
    produced by two nodes make the model unexecutable or ambiguous; a reviewer must know, but
    the weights can still be audited. Subgraphs see the names of their enclosing graphs.
    """
    where = f" in {scope}" if scope else ""
    local = {i.name for i in graph.input}
    local.update(t.name for t in graph.initializer)
    local.update(sp.values.name for sp in graph.sparse_initializer)
    available = local | outer
    producer: dict[str, int] = {}
    twice: list[str] = []
    for index, node in enumerate(graph.node):
        for out in node.output:
            if not out:
                continue
            # Within one graph only: a subgraph may shadow an outer name (exporters do).
            if out in producer or out in local:
                twice.append(out)
            producer.setdefault(out, index)
    problems = []
    if twice:
        problems.append(f"{len(twice)} tensor name(s) produced more than once{where}: {_quote(twice)}")
    dangling = sorted(
        {name for node in graph.node for name in node.input if name and name not in available and name not in producer}
    )
    if dangling:
        problems.append(f"{len(dangling)} input(s) that no node, graph input or initializer provides{where}: {_quote(dangling)}")
    # Kahn's algorithm on node -> node edges: whatever never becomes ready sits on a cycle.
    waiting = [0] * len(graph.node)
    consumers: dict[int, list[int]] = {}
    for index, node in enumerate(graph.node):
        for src in {producer[n] for n in node.input if n in producer and n not in available}:
            waiting[index] += 1
            consumers.setdefault(src, []).append(index)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        current = ready.pop()
        done += 1
        for nxt in consumers.get(current, ()):
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    if done < len(graph.node):
        stuck = [graph.node[i].name or f"{graph.node[i].op_type}#{i}" for i, c in enumerate(waiting) if c > 0]
        problems.append(f"cycle in the graph{where}: {len(stuck)} node(s) wait on each other: {_quote(stuck)}")
    inner = frozenset(available | set(producer))
    for index, node in enumerate(graph.node):
        for sub in _subgraphs(node):
            label = node.name or f"{node.op_type}#{index}"
            problems.extend(structure_problems(sub, inner, f"{scope}/{label}".lstrip("/")))
    return problems
