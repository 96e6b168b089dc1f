"""Generate the hostile-input corpus: broken, crafted and malicious ONNX files, one folder each.

    python tests/make_hostile.py OUT_DIR

Each case gets its own folder OUT_DIR/cases/<name>/ (the sandbox the audit may read) and the
decoy OUT_DIR/outside/secret.bin lies outside every sandbox: cases that try to escape point at
it, and the tests check that no file under OUT_DIR/outside is ever opened. `build()` returns the
cases with what wwaudit must answer (exit code, the words that name the problem, and for
problems confined to one tensor, the status of that tensor's layer). Used by tests/test_hostile.py.
"""

from __future__ import annotations

import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ROWS, COLS = 32, 16  # the target weight: big enough to be analysed (16 eigenvalues >= 8)
DECOY_VALUES = np.full((ROWS, COLS), 7.25, dtype=np.float32)  # what an escape would read


@dataclass
class Case:
    """One hostile input and the answer wwaudit must give."""

    name: str
    model: str  # the path given to wwaudit
    exit_code: int | None  # expected exit code; None: the audit completes (0 or 1)
    message: str  # lower-case words that must appear: on stderr (exit 2) or in the layer's reason/finding
    layer: str | None = None  # tensor whose layer entry is checked (audit completes)
    status: str | None = None  # its expected status
    finding: str | None = None  # a rule id expected among the findings
    analysed: str | None = None  # a tensor that must still be analysed ("ok"/"fit_failed"): the rest is audited
    args: list[str] = field(default_factory=list)  # extra CLI arguments
    skip: str | None = None  # why this case cannot be built here (no symlinks, running as root...)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((ROWS, COLS)).astype(np.float32), rng.standard_normal((COLS, 8)).astype(np.float32)


def _graph(
    target: TensorProto,
    extra_nodes: list | None = None,
    extra_inits: list | None = None,
    target_op: tuple[str, str] = ("", "MatMul"),
    nodes: list | None = None,
) -> onnx.GraphProto:
    """x[1,32] -> MatMul(w_target) -> Relu -> MatMul(w_ok) -> y: `w_ok` is always a sound layer."""
    _, ok = _weights()
    domain, op = target_op
    default_nodes = [
        helper.make_node(op, ["x", target.name], ["h"], name="fc_target", domain=domain or None),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w_ok"], ["y"], name="fc_ok"),
    ]
    return helper.make_graph(
        (nodes if nodes is not None else default_nodes) + (extra_nodes or []),
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ROWS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [target, numpy_helper.from_array(ok, "w_ok")] + (extra_inits or []),
    )


def _model(graph: onnx.GraphProto, extra_opsets: list | None = None) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)] + (extra_opsets or []))


def _save(model: onnx.ModelProto, path: Path) -> str:
    """Serialise without onnx.save's checks or external-data rewriting: the bytes are the test."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return str(path)


def _external(
    name: str,
    location: str,
    offset: int = 0,
    length: int | None = None,
    dims: tuple[int, ...] = (ROWS, COLS),
    data_type: int = TensorProto.FLOAT,
) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def _raw(name: str, dims: tuple[int, ...], data: bytes, data_type: int = TensorProto.FLOAT) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    t.raw_data = data
    return t


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand (onnx.helper refuses deep nesting)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _deeply_nested(levels: int) -> bytes:
    """A ModelProto whose If nodes nest `levels` deep, beyond any protobuf parser's depth limit."""
    graph = b""
    for _ in range(levels):
        attribute = _field(1, b"then_branch") + _field(6, graph) + _varint(20 << 3) + _varint(AttributeTypeGraph)
        node = _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + _field(5, attribute)
        graph = _field(1, node)
    opset = _field(1, b"") + _varint(2 << 3) + _varint(OPSET)
    return _varint(1 << 3) + _varint(8) + _field(8, opset) + _field(7, graph)


AttributeTypeGraph = onnx.AttributeProto.GRAPH


def _nested_ifs(levels: int) -> onnx.ModelProto:
    """The target MatMul inside `levels` nested If then-branches (within protobuf's limits)."""
    target, _ = _weights(1)
    y = [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, COLS])]
    inner = helper.make_graph([helper.make_node("MatMul", ["x", "w_deep"], ["h"], name="fc_deep")], "deep", [], y)
    empty = helper.make_graph([helper.make_node("Identity", ["x"], ["h"])], "else", [], y)
    for level in range(levels):
        node = helper.make_node("If", ["c"], ["h"], name=f"if_{level}", then_branch=inner, else_branch=empty)
        inner = helper.make_graph([node], f"level_{level}", [], y)
    graph = _graph(
        numpy_helper.from_array(target, "w_deep"),
        nodes=list(inner.node)
        + [
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w_ok"], ["y"], name="fc_ok"),
        ],
    )
    graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    return _model(graph)


def _function_model(functions: list[onnx.FunctionProto], entry: str) -> onnx.ModelProto:
    target, _ = _weights(2)
    graph = _graph(
        numpy_helper.from_array(target, "w_target"),
        extra_nodes=[helper.make_node(entry, ["x"], ["unused"], domain="local", name="entry")],
    )
    model = _model(graph, [helper.make_opsetid("local", 1)])
    model.functions.extend(functions)
    return model


def _function_bomb(levels: int = 40) -> onnx.ModelProto:
    """F0 calls F1 twice, F1 calls F2 twice...: a few hundred bytes that expand to 2^levels nodes."""
    functions = []
    for level in range(levels):
        callee = f"F{level + 1}"
        body = [helper.make_node(callee, ["a"], ["b"], domain="local"), helper.make_node(callee, ["b"], ["c"], domain="local")]
        if level == levels - 1:
            body = [helper.make_node("Relu", ["a"], ["c"])]
        functions.append(helper.make_function("local", f"F{level}", ["a"], ["c"], body, [helper.make_opsetid("", OPSET)]))
    return _function_model(functions, "F0")


def _function_recursion() -> onnx.ModelProto:
    """A function that calls itself: infinite if walked naively."""
    body = [helper.make_node("Self", ["a"], ["c"], domain="local")]
    return _function_model([helper.make_function("local", "Self", ["a"], ["c"], body, [helper.make_opsetid("", OPSET)])], "Self")


def _function_chain(length: int) -> onnx.ModelProto:
    """F0 calls F1 calls F2 ... F<length>: one node per level, far past Python's recursion limit."""
    functions = []
    for level in range(length):
        body = (
            [helper.make_node(f"F{level + 1}", ["a"], ["c"], domain="local")]
            if level < length - 1
            else [helper.make_node("Relu", ["a"], ["c"])]
        )
        functions.append(helper.make_function("local", f"F{level}", ["a"], ["c"], body, [helper.make_opsetid("", OPSET)]))
    return _function_model(functions, "F0")


def _sparse(name: str, dims: tuple[int, ...], values: np.ndarray, indices: np.ndarray) -> onnx.SparseTensorProto:
    return helper.make_sparse_tensor(
        numpy_helper.from_array(values, name), numpy_helper.from_array(indices, name + "_idx"), list(dims)
    )


def _sparse_target(indices: np.ndarray) -> onnx.ModelProto:
    """w_target as a sparse initializer whose indices are given (out of range, wrong width...)."""
    _, ok = _weights()
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w_target"], ["h"], name="fc_target"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w_ok"], ["y"], name="fc_ok"),
        ],
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ROWS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(ok, "w_ok")],
        sparse_initializer=[_sparse("w_target", (ROWS, COLS), np.arange(1, 4, dtype=np.float32), indices)],
    )
    return _model(graph)


def _einsum_three_inputs() -> onnx.ModelProto:
    """An Einsum whose weight sits in its third input: the plan must mark it, not index past the equation."""
    weights, _ = _weights()
    return _model(
        _graph(
            numpy_helper.from_array(weights, "w_target"),
            nodes=[
                helper.make_node("Einsum", ["x", "x", "w_target"], ["h"], name="fc_target", equation="ij,jk->ik"),
                helper.make_node("Relu", ["x"], ["r0"], name="relu0"),
                helper.make_node("MatMul", ["x", "w_mid"], ["r"], name="fc_mid"),
                helper.make_node("MatMul", ["r", "w_ok"], ["y"], name="fc_ok"),
            ],
            extra_inits=[numpy_helper.from_array(_weights(3)[0][:, :COLS], "w_mid")],
        )
    )


def repeated_location_external(location: str) -> TensorProto:
    """An external tensor with two `location` keys: weights.bin (checked first), then `location`."""
    t = _external("w_target", "weights.bin", length=ROWS * COLS * 4)
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


def sparse_tied_bomb(rows: int = 65536, cols: int = 65535) -> onnx.ModelProto:
    """Two sparse [rows, cols] float tables with one value each: a Gather table and a Gemm weight of
    the same shape, so the tied-copy check would densify both (32 GiB at the default size)."""
    one = np.array([1.0], np.float32)
    table = _sparse("emb", (rows, cols), one, np.array([5], np.int64))
    head = _sparse("head", (rows, cols), one, np.array([5], np.int64))
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
            helper.make_node("Gemm", ["e", "head"], ["y"], name="lm_head", transB=1),
        ],
        "bomb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [],
        sparse_initializer=[table, head],
    )
    return _model(graph)


def many_tiny_initializers(count: int) -> onnx.ModelProto:
    """`count` tiny 1-D initializers added to a sound model: thousands of entries nobody needs listed."""
    weights, _ = _weights()
    tiny = [numpy_helper.from_array(np.full(2, i, np.float32), f"tiny_{i}") for i in range(count)]
    return _model(_graph(numpy_helper.from_array(weights, "w_target"), extra_inits=tiny))


def shared_weight_many_consumers(count: int) -> onnx.ModelProto:
    """One 64x64 weight consumed by `count` MatMul nodes."""
    w = numpy_helper.from_array(np.random.default_rng(4).standard_normal((64, 64)).astype(np.float32), "w_shared")
    nodes = [helper.make_node("MatMul", ["x", "w_shared"], [f"h{i}"], name=f"mm_{i}") for i in range(count)]
    graph = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 64])],
        [w],
    )
    return _model(graph)


def long_node_name(length: int) -> onnx.ModelProto:
    """The target layer's node named with `length` characters."""
    weights, _ = _weights()
    graph = _graph(numpy_helper.from_array(weights, "w_target"))
    graph.node[0].name = "n" * length
    return _model(graph)


def conv_many_positions(side: int = 1000) -> onnx.ModelProto:
    """A valid Conv weight [2, 1, side, side]: side² kernel positions, side² eigenvalues."""
    w = np.random.default_rng(5).standard_normal((2, 1, side, side)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w_conv"], ["y"], name="conv")],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w_conv")],
    )
    return _model(graph)


def payload_cases() -> dict[str, tuple[onnx.ModelProto, str, dict[str, bytes]]]:
    """The payload-ambiguity constructions: name -> (model, rule id, extra files beside it)."""
    weights, _ = _weights()
    w = numpy_helper.from_array(weights, "w_target")
    two = TensorProto()
    two.CopyFrom(w)
    two.float_data.extend((weights * 0).ravel().tolist())  # raw_data runs; float_data is a decoy
    raw_ext = _external("w_target", "weights.bin", length=ROWS * COLS * 4)
    raw_ext.raw_data = (weights * 0).tobytes()
    dup = _graph(w, extra_inits=[numpy_helper.from_array(weights * 2, "w_target")])
    override = _graph(w)
    override.input.append(helper.make_tensor_value_info("w_target", TensorProto.FLOAT, [ROWS, COLS]))
    overlap = _graph(
        _external("w_target", "weights.bin", length=ROWS * COLS * 4),
        extra_inits=[_external("w_alias", "weights.bin", offset=ROWS * COLS * 2, length=ROWS * COLS * 2, dims=(ROWS // 2, COLS))],
    )
    wrong_field = _raw("w_target", (ROWS, COLS), weights.tobytes())
    wrong_field.double_data.extend([1.0] * 4)
    data = {"weights.bin": weights.tobytes()}
    return {
        "payload_raw_and_float_data": (_model(_graph(two)), "WW020", {}),
        "payload_raw_and_external": (_model(_graph(raw_ext)), "WW020", data),
        "payload_duplicate_initializer": (_model(dup), "WW021", {}),
        "payload_input_override": (_model(override), "WW022", {}),
        "payload_overlapping_external": (_model(overlap), "WW023", data),
        "payload_dtype_field_mismatch": (_model(_graph(wrong_field)), "WW024", {}),
    }


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------
def build(out_dir: str | os.PathLike) -> list[Case]:
    """Write every case under `out_dir` and return them (idempotent: call it on an empty folder)."""
    out = Path(out_dir).resolve()
    outside = out / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.bin"
    secret.write_bytes(DECOY_VALUES.tobytes())
    (outside / "sub").mkdir(exist_ok=True)
    (outside / "sub" / "secret.bin").write_bytes(DECOY_VALUES.tobytes())
    cases: list[Case] = []
    weights, _ = _weights()
    good = numpy_helper.from_array(weights, "w_target")

    def folder(name: str) -> Path:
        path = out / "cases" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(name: str, model: str, exit_code: int | None, message: str, **kw) -> None:
        cases.append(Case(name, model, exit_code, message, **kw))

    # -- the file itself -------------------------------------------------------------------
    d = folder("not_onnx")
    (d / "model.onnx").write_bytes(b"\xff\xfe this is a text file pretending to be a model \x00\x07" * 3)
    add("not_onnx", str(d / "model.onnx"), 2, "not a valid onnx model")

    d = folder("empty")
    (d / "model.onnx").write_bytes(b"")
    add("empty", str(d / "model.onnx"), 2, "empty")

    d = folder("truncated")
    full = _model(_graph(good)).SerializeToString()
    (d / "model.onnx").write_bytes(full[: len(full) // 2])
    add("truncated", str(d / "model.onnx"), 2, "truncated or corrupt")

    d = folder("invalid_utf8_name")  # protobuf hands proto2 strings with invalid UTF-8 over as bytes
    (d / "model.onnx").write_bytes(full.replace(b"fc_target", b"\xff\xfe_target"))
    add("invalid_utf8_name", str(d / "model.onnx"), 2, "not valid utf-8")

    d = folder("wrong_extension_zip")
    with zipfile.ZipFile(d / "model.pt", "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    add("wrong_extension_zip", str(d / "model.pt"), 2, "zip archive")

    d = folder("pickle")
    (d / "model.onnx").write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.")
    add("pickle", str(d / "model.onnx"), 2, "pickle")

    d = folder("onnx_with_other_extension")  # a valid model under another name is audited normally
    add("onnx_with_other_extension", _save(_model(_graph(good)), d / "model.bin"), None, "", analysed="w_target")

    d = folder("directory")
    (d / "model.onnx").mkdir(exist_ok=True)
    add("directory", str(d / "model.onnx"), 2, "is a directory")

    d = folder("missing")
    add("missing", str(d / "model.onnx"), 2, "no such file")

    d = folder("no_permission")
    path = Path(_save(_model(_graph(good)), d / "model.onnx"))
    path.chmod(0)
    readable = os.access(path, os.R_OK)  # root reads it anyway: the test simulates EACCES instead
    add(
        "no_permission",
        str(path),
        2,
        "permission denied",
        skip="running as root: mode 000 does not stop root from reading" if readable else None,
    )

    d = folder("fifo")
    if hasattr(os, "mkfifo"):
        if not (d / "model.onnx").exists():
            os.mkfifo(d / "model.onnx")
        add("fifo", str(d / "model.onnx"), 2, "not a regular file")

    # -- external data: escapes and broken references --------------------------------------
    def ext_case(name: str, location: str, message: str, setup=None, **kw) -> None:
        d = folder(name)
        if setup is not None:
            reason = setup(d)
            if reason:
                add(name, str(d / "model.onnx"), 2, message, skip=reason)
                return
        model = _model(_graph(_external("w_target", location, **kw)))
        add(name, _save(model, d / "model.onnx"), 2, message)

    ext_case("ext_dotdot", "../../outside/secret.bin", "'..'")
    ext_case("ext_dotdot_backslash", "..\\..\\outside\\secret.bin", "'..'")
    ext_case("ext_absolute", str(secret), "absolute path")

    def symlink_file(d: Path) -> str | None:
        link = d / "weights.bin"
        if not link.is_symlink():
            try:
                link.symlink_to(secret)
            except OSError as exc:
                return f"cannot create symbolic links here: {exc}"
        return None

    ext_case("ext_symlink_file", "weights.bin", "symbolic link", setup=symlink_file)

    def symlink_dir(d: Path) -> str | None:
        link = d / "data"
        if not link.is_symlink():
            try:
                link.symlink_to(outside / "sub", target_is_directory=True)
            except OSError as exc:
                return f"cannot create symbolic links here: {exc}"
        return None

    ext_case("ext_symlink_parent", "data/secret.bin", "symbolic link", setup=symlink_dir)

    def hard_link(d: Path) -> str | None:
        link = d / "weights.bin"
        if not link.exists():
            try:
                os.link(secret, link)
            except OSError as exc:
                return f"cannot create hard links here: {exc}"
        return None

    ext_case("ext_hardlink", "weights.bin", "hard link", setup=hard_link)
    ext_case("ext_missing_file", "weights.bin", "not found")
    ext_case("ext_empty_location", "", "empty location")
    ext_case("ext_terminal_escape", "\x1b]0;pwned\x07\x1b[2J/../x", "'..'")  # must reach the terminal inert

    # Broken ranges spoil one tensor: that layer is an error, the rest is audited.
    def ext_tensor_case(
        name: str, message: str, offset: int = 0, length: int | None = None, data: bytes = weights.tobytes()
    ) -> None:
        d = folder(name)
        (d / "weights.bin").write_bytes(data)
        model = _model(_graph(_external("w_target", "weights.bin", offset=offset, length=length)))
        # the unreadable weight is not audited: rule WW010 (error) fails the verdict, exit 1
        add(name, _save(model, d / "model.onnx"), 1, message, layer="w_target", status="error", analysed="w_ok", finding="WW010")

    ext_tensor_case("ext_offset_beyond_eof", "beyond the end", offset=1 << 20)
    ext_tensor_case("ext_truncated_data_file", "beyond the end", data=weights.tobytes()[:100])
    ext_tensor_case("ext_length_mismatch", "does not match", length=ROWS * COLS * 4 - 4)

    # -- tensors -----------------------------------------------------------------------------
    def tensor_case(
        name: str,
        target: TensorProto,
        message: str,
        status: str,
        finding: str | None = None,
        exit_code: int | None = None,
        target_op: tuple[str, str] = ("", "MatMul"),
        **kw,
    ) -> None:
        d = folder(name)
        extra_opsets = [helper.make_opsetid(target_op[0], 1)] if target_op[0] else None
        model = _model(_graph(target, target_op=target_op), extra_opsets)
        add(
            name,
            _save(model, d / "model.onnx"),
            exit_code,
            message,
            layer=target.name,
            status=status,
            finding=finding,
            analysed="w_ok",
            **kw,
        )

    tensor_case("memory_bomb", _raw("w_target", (1 << 31, 1 << 31), weights.tobytes()), "--max-memory", "skipped", exit_code=3)
    tensor_case("memory_bomb_under_limit", _raw("w_target", (100_000, 1_000), weights.tobytes()), "raw data has", "error")
    tensor_case("negative_dims", _raw("w_target", (-ROWS, COLS), weights.tobytes()), "negative dimension", "skipped")
    tensor_case(
        "raw_data_short",
        _raw("w_target", (ROWS, COLS), weights.tobytes()[:-4]),
        "raw data has",
        "error",
        finding="WW010",
        exit_code=1,
    )
    tensor_case(
        "raw_data_long",
        _raw("w_target", (ROWS, COLS), weights.tobytes() + b"\0" * 8),
        "raw data has",
        "error",
        finding="WW010",
        exit_code=1,
    )
    tensor_case("unknown_dtype", _raw("w_target", (ROWS, COLS), weights.tobytes(), data_type=99), "unsupported dtype", "skipped")
    strings = helper.make_tensor("w_target", TensorProto.STRING, (ROWS, COLS), [b"w"] * (ROWS * COLS))
    tensor_case("string_tensor", strings, "string tensor", "skipped")
    nan = weights.copy()
    nan[3, 4], nan[5, 6] = np.nan, np.inf
    tensor_case("nan_inf", numpy_helper.from_array(nan, "w_target"), "nan", "error", finding="WW006", exit_code=1)
    tensor_case(
        "all_zero", numpy_helper.from_array(np.zeros_like(weights), "w_target"), "zero", "error", finding="WW007", exit_code=1
    )
    tensor_case(
        "constant", numpy_helper.from_array(np.full_like(weights, 0.5), "w_target"), "constant", "", finding="WW007", exit_code=1
    )
    tensor_case("float64_overflow", numpy_helper.from_array(weights.astype(np.float64) * 1e200, "w_target"), "overflow", "error")
    tensor_case("one_by_n", numpy_helper.from_array(weights[:1], "w_target"), "too small", "skipped")
    tensor_case(
        "custom_domain_op",
        numpy_helper.from_array(weights, "w_target"),
        "com.vendor",
        "skipped",
        target_op=("com.vendor", "SecretSauce"),
    )

    # -- graph structure ------------------------------------------------------------------
    def graph_case(
        name: str,
        model: onnx.ModelProto,
        message: str,
        exit_code: int | None = None,
        finding: str | None = "WW000",
        analysed: str | None = "w_ok",
    ) -> None:
        d = folder(name)
        add(name, _save(model, d / "model.onnx"), exit_code, message, finding=finding, analysed=analysed)

    dup = _graph(good, extra_inits=[numpy_helper.from_array(weights * 2, "w_target")])
    graph_case("duplicate_names", _model(dup), "duplicate")
    cycle = _graph(
        good,
        nodes=[
            helper.make_node("MatMul", ["loop", "w_target"], ["h"], name="fc_target"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w_ok"], ["y"], name="fc_ok"),
            helper.make_node("Slice", ["h", "zero", "rows"], ["loop"], name="back_edge"),
        ],
    )
    cycle.initializer.extend(
        [numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([ROWS], np.int64), "rows")]
    )
    graph_case("cycle", _model(cycle), "cycle")
    dangling = _graph(
        good,
        nodes=[
            helper.make_node("MatMul", ["x", "w_target"], ["h"], name="fc_target"),
            helper.make_node("Add", ["h", "ghost_bias"], ["hb"], name="add_ghost"),
            helper.make_node("Relu", ["hb"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w_ok"], ["y"], name="fc_ok"),
        ],
    )
    graph_case("dangling_input", _model(dangling), "ghost_bias")
    graph_case("nested_if_ok", _nested_ifs(25), "", finding=None, analysed="w_deep")
    d = folder("nested_too_deep")
    (d / "model.onnx").write_bytes(_deeply_nested(400))
    add("nested_too_deep", str(d / "model.onnx"), 2, "nested deeper")
    graph_case("function_bomb", _function_bomb(), "expands to more than", exit_code=2, finding=None, analysed=None)
    graph_case("function_recursion", _function_recursion(), "calls itself", exit_code=2, finding=None, analysed=None)
    _issue22_cases(folder, add, outside)
    return cases


def _issue22_cases(folder, add, outside: Path) -> None:
    """Issue 22's findings, each built the way the fuzzer built it."""
    weights, _ = _weights()
    for name, second in (
        ("ext_repeated_location_dotdot", "../../outside/secret.bin"),
        ("ext_repeated_location_symlink", "link.bin"),
    ):
        d = folder(name)
        (d / "weights.bin").write_bytes(weights.tobytes())
        if not (d / "link.bin").is_symlink():
            try:
                (d / "link.bin").symlink_to(outside / "secret.bin")
            except OSError:
                pass
        add(name, _save(_model(_graph(repeated_location_external(second))), d / "model.onnx"), 2, "repeats the key")
    for name, key, value, message in (
        ("ext_unknown_key", "sha1", "abc", "unknown key"),
        ("ext_offset_not_a_number", "offset", "1e3", "not a non-negative integer"),
        ("ext_length_not_a_number", "length", "0x800", "not a non-negative integer"),
    ):
        d = folder(name)
        (d / "weights.bin").write_bytes(weights.tobytes())
        t = _external("w_target", "weights.bin")
        if key in ("offset", "length"):
            for entry in t.external_data:
                if entry.key == "offset":
                    t.external_data.remove(entry)
                    break
        entry = t.external_data.add()
        entry.key, entry.value = key, value
        add(name, _save(_model(_graph(t)), d / "model.onnx"), 2, message)

    def layer_case(
        name: str,
        model: onnx.ModelProto,
        message: str,
        status: str,
        exit_code: int | None,
        finding: str | None = None,
        analysed: str | None = "w_ok",
        **kw,
    ) -> None:
        add(
            name,
            _save(model, folder(name) / "model.onnx"),
            exit_code,
            message,
            layer="w_target",
            status=status,
            finding=finding,
            analysed=analysed,
            **kw,
        )

    layer_case(
        "sparse_index_out_of_range",
        _sparse_target(np.array([[0, 0], [1, 1], [ROWS, 0]], np.int64)),
        "outside its shape",
        "error",
        1,
        finding="WW010",
    )
    layer_case(
        "sparse_index_wrong_width",
        _sparse_target(np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]], np.int64)),
        "3-wide coordinates",
        "error",
        1,
        finding="WW010",
    )
    layer_case(
        "sparse_linear_index_negative",
        _sparse_target(np.array([0, -5, 7], np.int64)),
        "outside its shape",
        "error",
        1,
        finding="WW010",
    )
    layer_case("einsum_three_inputs", _einsum_three_inputs(), "not a plain 2-d matrix product", "skipped", None)
    add("function_chain_600", _save(_function_chain(600), folder("function_chain_600") / "model.onnx"), 2, "levels deep")
    for name, (model, rule, files) in payload_cases().items():
        d = folder(name)
        for file_name, data in files.items():
            (d / file_name).write_bytes(data)
        add(name, _save(model, d / "model.onnx"), 1, "integrity", finding=rule, analysed="w_ok")


def main(argv: list[str]) -> int:
    """Write the corpus into the folder given on the command line and list the cases."""
    if len(argv) != 1:
        print("usage: python tests/make_hostile.py OUT_DIR", file=sys.stderr)
        return 2
    for case in build(argv[0]):
        expect = f"exit {case.exit_code}" if case.exit_code is not None else "audited"
        print(f"{case.name:28s} {expect:8s} {case.message!r:28s} {case.model}" + (f"  [skip: {case.skip}]" if case.skip else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
