"""Structure-aware generators of hostile ONNX models, shared by the CI fuzz tests
(tests/test_fuzz.py, a few dozen cases) and the long campaign (benchmarks/fuzz_campaign.py).

Each generator draws one family of trouble from a numpy Generator and writes a model (and any
data file it refers to) into a case folder: path tricks in external_data, sparse indices, conv
and quantization parameters, large graphs and long names, deep nesting, values at the limits of
their dtype, and payload ambiguity. `scale` bounds sizes: 1 for CI, larger in the campaign.
`make_case` combines one or two families into one model. A decoy file lies outside the case
folder; the oracle (`check_outcome`) says what a run of the CLI on the case may do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
LOCATIONS = [
    "weights.bin",
    "../outside/secret.bin",
    "/etc/passwd",
    "link.bin",
    "linkdir/secret.bin",
    "sub/../../outside/secret.bin",
    "..\\outside\\secret.bin",
    "",
    ".",
    "sub/",
    "C:/x",
    "weights.bin\x00x",
    "sub//weights.bin",
    "./weights.bin",
    "nope.bin",
    "sub",
    "sub/weights.bin",
]
NUMBERS = ["0", "4", "-8", "1e3", "0x10", " 4", "99999999999999999999999", "x", "", "128", "+4", "٣"]
EXTREMES = [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 6.1e-5, 1e-45, 3.4e38, 1e150, 1e300, -1e300]


@dataclass
class Built:
    """What a generator adds to the base model: graph pieces, files beside it, extra CLI args."""

    nodes: list
    inits: list
    sparse: list
    inputs: list
    functions: list
    files: dict[str, bytes]
    args: list[str]


def _empty() -> Built:
    return Built([], [], [], [], [], {}, [])


def _matrix(rng: np.random.Generator, rows: int, cols: int, dtype: type = np.float32) -> np.ndarray:
    return rng.standard_normal((rows, cols)).astype(dtype)


def _mm(b: Built, weight: str, name: str) -> None:
    """A MatMul of the graph input by `weight` (its output is left unused: fine for an audit)."""
    b.nodes.append(helper.make_node("MatMul", ["x", weight], [f"{name}_out"], name=name))


def gen_paths(rng: np.random.Generator, b: Built, scale: int) -> None:
    """External data with escaping, repeated, unknown or malformed keys."""
    data = _matrix(rng, 16, 8).tobytes()
    b.files["weights.bin"] = data
    t = TensorProto(name="w_ext", data_type=TensorProto.FLOAT, dims=[16, 8], data_location=TensorProto.EXTERNAL)
    for _ in range(int(rng.integers(1, 5))):
        key = str(rng.choice(["location", "location", "offset", "length", "checksum", "basepath", "sha", "Location"]))
        value = str(rng.choice(LOCATIONS)) if key.lower() == "location" else str(rng.choice(NUMBERS))
        e = t.external_data.add()
        e.key, e.value = key, value
    if rng.random() < 0.3:
        t.raw_data = data[: int(rng.integers(0, len(data)))]
    b.inits.append(t)
    _mm(b, "w_ext", "fc_ext")


def gen_sparse(rng: np.random.Generator, b: Built, scale: int) -> None:
    """Sparse initializers with indices out of range, negative, of the wrong width or rank or dtype."""
    dims = [int(d) for d in rng.integers(0, 40 * scale, size=int(rng.integers(1, 4)))]
    nnz = int(rng.integers(0, 12))
    width = int(rng.choice([0, 1, len(dims), len(dims) + 1]))
    shape = (nnz,) if width == 0 else (nnz, width)
    high = int(max(1, np.prod(dims) if dims else 1) * rng.choice([1, 2]))
    indices = rng.integers(-2 if rng.random() < 0.2 else 0, high, size=shape)
    dtype = rng.choice([np.int64, np.int32, np.uint64, np.int8, np.float32])
    values = rng.standard_normal(nnz + int(rng.choice([0, 0, 1]))).astype(np.float32)
    sp = helper.make_sparse_tensor(
        numpy_helper.from_array(values, "w_sparse"), numpy_helper.from_array(indices.astype(dtype), "w_sparse_idx"), dims
    )
    b.sparse.append(sp)
    b.nodes.append(
        helper.make_node(str(rng.choice(["MatMul", "Gemm", "Gather"])), ["x", "w_sparse"], ["sp_out"], name="fc_sparse")
    )


def gen_conv(rng: np.random.Generator, b: Built, scale: int) -> None:
    """Conv and ConvTranspose weights with odd ranks, groups and kernel sizes."""
    rank = int(rng.integers(1, 6))
    dims = [int(rng.integers(1, 6 * scale)) for _ in range(rank)]
    if rank >= 3 and rng.random() < 0.3:
        dims[-1] = int(rng.integers(50, 400 * scale))  # many kernel positions
    w = rng.standard_normal(dims).astype(np.float32)
    b.inits.append(numpy_helper.from_array(w, "w_conv"))
    op = str(rng.choice(["Conv", "ConvTranspose"]))
    group = int(rng.choice([1, 1, 2, 3, 0, -1, dims[0]]))
    b.nodes.append(helper.make_node(op, ["x", "w_conv"], ["conv_out"], name="conv", group=group))


def gen_quant(rng: np.random.Generator, b: Built, scale: int) -> None:
    """DequantizeLinear and MatMulNBits with mismatched scales, zero points, axes and blocks."""
    rows, cols = int(rng.integers(1, 24 * scale)), int(rng.integers(1, 24 * scale))
    q = rng.integers(-128, 127, size=(rows, cols)).astype(rng.choice([np.int8, np.uint8, np.int32]))
    b.inits.append(numpy_helper.from_array(q, "w_q"))
    n_scale = int(rng.choice([1, rows, cols, rows + 1, 0]))
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN scales are the point here
        scales = np.abs(rng.standard_normal(n_scale)).astype(np.float32) * float(rng.choice([1.0, 0.0, 1e38, np.inf]))
    b.inits.append(numpy_helper.from_array(scales.reshape(()) if n_scale == 1 and rng.random() < 0.5 else scales, "w_scale"))
    zp = rng.integers(0, 3, size=n_scale).astype(rng.choice([np.int8, np.uint8, np.int64]))
    b.inits.append(numpy_helper.from_array(zp, "w_zp"))
    attrs = {"axis": int(rng.integers(-3, 3))}
    if rng.random() < 0.3:
        attrs["block_size"] = int(rng.choice([0, 1, 3, 32, -4]))
    b.nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], name="dq", **attrs))
    _mm(b, "w_dq", "fc_q")
    if rng.random() < 0.5:
        k, n = int(rng.integers(1, 64 * scale)), int(rng.integers(1, 32 * scale))
        bits, block = int(rng.choice([2, 4, 8, 3])), int(rng.choice([16, 32, 0, 7]))
        packed = rng.integers(0, 255, size=(n, max(1, k // max(block, 1)), max(1, block * bits // 8))).astype(np.uint8)
        b.inits += [
            numpy_helper.from_array(packed, "w_nbits"),
            numpy_helper.from_array(np.ones(int(rng.integers(0, 2 * n + 2)), np.float32), "w_nbits_scale"),
        ]
        b.nodes.append(
            helper.make_node(
                "MatMulNBits",
                ["x", "w_nbits", "w_nbits_scale"],
                ["nb_out"],
                name="nbits",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=bits,
                block_size=block,
            )
        )


def gen_huge(rng: np.random.Generator, b: Built, scale: int) -> None:
    """Many nodes sharing one weight, many tiny initializers, and very long names."""
    shared = numpy_helper.from_array(_matrix(rng, 16, 16), "w_shared")
    b.inits.append(shared)
    for i in range(int(rng.integers(1, 300 * scale))):
        b.nodes.append(helper.make_node("MatMul", ["x16", "w_shared"], [f"s{i}"], name=f"mm_{i}"))
    for i in range(int(rng.integers(0, 600 * scale))):
        b.inits.append(numpy_helper.from_array(np.full(int(rng.integers(1, 3)), i, np.float32), f"tiny_{i}"))
    if rng.random() < 0.5:
        b.nodes[-1].name = "n" * int(rng.integers(1000, 20_000 * scale))


def gen_nesting(rng: np.random.Generator, b: Built, scale: int) -> None:
    """Function chains (short, past the walker's limit, past Python's), nested Ifs, self-calls."""
    kind = str(rng.choice(["chain", "ifs", "self"]))
    if kind == "chain":
        length = int(rng.choice([3, 40, 70, 200, 600]))
        for level in range(length):
            body = (
                [helper.make_node(f"F{level + 1}", ["a", "b"], ["c"], domain="local")]
                if level < length - 1
                else [helper.make_node("MatMul", ["a", "b"], ["c"])]
            )
            b.functions.append(
                helper.make_function("local", f"F{level}", ["a", "b"], ["c"], body, [helper.make_opsetid("", OPSET)])
            )
        b.inits.append(numpy_helper.from_array(_matrix(rng, 16, 8), "w_fn"))
        b.nodes.append(helper.make_node("F0", ["x", "w_fn"], ["fn_out"], domain="local", name="call"))
    elif kind == "ifs":
        y = [helper.make_tensor_value_info("if_out", TensorProto.FLOAT, None)]
        inner = helper.make_graph([helper.make_node("MatMul", ["x", "w_if"], ["if_out"], name="fc_if")], "leaf", [], y)
        empty = helper.make_graph([helper.make_node("Identity", ["x"], ["if_out"])], "else", [], y)
        for level in range(int(rng.integers(1, 26))):  # deeper: tests/make_hostile.py encodes it by hand
            node = helper.make_node("If", ["cond"], ["if_out"], name=f"if_{level}", then_branch=inner, else_branch=empty)
            inner = helper.make_graph([node], f"l{level}", [], y)
        b.inits.append(numpy_helper.from_array(_matrix(rng, 16, 8), "w_if"))
        b.nodes.extend(inner.node)
        b.inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    else:
        body = [helper.make_node("Self", ["a"], ["c"], domain="local")]
        b.functions.append(helper.make_function("local", "Self", ["a"], ["c"], body, [helper.make_opsetid("", OPSET)]))
        b.nodes.append(helper.make_node("Self", ["x"], ["self_out"], domain="local", name="self_call"))


def gen_limits(rng: np.random.Generator, b: Built, scale: int) -> None:
    """Weights at the limits of their dtype: extremes, NaN/Inf, subnormals, constants, odd dtypes."""
    rows, cols = int(rng.integers(8, 24 * scale)), int(rng.integers(8, 24 * scale))
    dtype = rng.choice([np.float16, np.float32, np.float64, np.int8, np.int64])
    fill = rng.choice(["extremes", "constant", "random"])
    if fill == "extremes":
        w = rng.choice(EXTREMES, size=(rows, cols))
    elif fill == "constant":
        w = np.full((rows, cols), rng.choice(EXTREMES))
    else:
        w = rng.standard_normal((rows, cols)) * float(rng.choice([1e-40, 1.0, 1e140, 1e149, 1e151]))
    with np.errstate(all="ignore"):
        arr = w.astype(dtype) if np.dtype(dtype).kind == "f" else np.nan_to_num(w).clip(-100, 100).astype(dtype)
    t = numpy_helper.from_array(arr, "w_lim")
    if rng.random() < 0.2:
        t.data_type = int(rng.choice([TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2]))
        t.raw_data = t.raw_data[: rows * cols]
    b.inits.append(t)
    _mm(b, "w_lim", "fc_lim")


def gen_payloads(rng: np.random.Generator, b: Built, scale: int) -> None:
    """Two payloads, a repeated name, an overridable initializer, overlapping ranges, wrong fields."""
    w = _matrix(rng, 16, 8)
    t = numpy_helper.from_array(w, "w_pay")
    choice = str(rng.choice(["float_data", "double_data", "int32_data", "external", "dup", "input", "overlap"]))
    if choice in ("float_data", "double_data", "int32_data"):
        getattr(t, choice).extend([1] * int(rng.integers(1, 200)))
        if rng.random() < 0.5:
            t.ClearField("raw_data")
    elif choice == "external":
        b.files["weights.bin"] = w.tobytes()
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("length", str(w.nbytes))):
            e = t.external_data.add()
            e.key, e.value = key, value
    elif choice == "dup":
        b.inits.append(numpy_helper.from_array(w * 2, "w_pay"))
    elif choice == "input":
        b.inputs.append(helper.make_tensor_value_info("w_pay", TensorProto.FLOAT, [16, 8]))
    else:
        b.files["weights.bin"] = w.tobytes() * 2
        for name, offset in (("w_pay", 0), ("w_pay2", int(rng.integers(0, w.nbytes)))):
            e = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[16, 8], data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "weights.bin"), ("offset", str(offset))):
                entry = e.external_data.add()
                entry.key, entry.value = key, value
            b.inits.append(e)
        _mm(b, "w_pay2", "fc_pay2")
        t = None
    if t is not None:
        b.inits.insert(0, t)
    _mm(b, "w_pay", "fc_pay")


FAMILIES: dict[str, Callable[[np.random.Generator, Built, int], None]] = {
    "paths": gen_paths,
    "sparse": gen_sparse,
    "conv": gen_conv,
    "quant": gen_quant,
    "huge": gen_huge,
    "nesting": gen_nesting,
    "limits": gen_limits,
    "payloads": gen_payloads,
}


def make_case(seed: int, folder: Path, scale: int = 1) -> tuple[str, list[str], list[str]]:
    """Write case `seed` into `folder` (the sandbox): (model path, its families, extra CLI args)."""
    rng = np.random.default_rng(seed)
    names = list(FAMILIES)
    chosen = [names[seed % len(names)]] + ([str(rng.choice(names))] if rng.random() < 0.3 else [])
    b = _empty()
    b.inits.append(numpy_helper.from_array(_matrix(rng, 16, 8), "w_base"))
    _mm(b, "w_base", "fc_base")
    for name in dict.fromkeys(chosen):
        FAMILIES[name](rng, b, scale)
    graph = helper.make_graph(
        b.nodes,
        "fuzz",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]),
            helper.make_tensor_value_info("x16", TensorProto.FLOAT, [1, 16]),
        ]
        + b.inputs,
        [helper.make_tensor_value_info("fc_base_out", TensorProto.FLOAT, [1, 8])],
        b.inits,
        sparse_initializer=b.sparse,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("local", 1), helper.make_opsetid("com.microsoft", 1)],
    )
    model.functions.extend(b.functions)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in b.files.items():
        (folder / name).write_bytes(data)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path), chosen, b.args


def prepare_sandbox(root: Path) -> tuple[Path, Path]:
    """A decoy outside every case, and links pointing at it inside the case folder."""
    outside = root / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.bin").write_bytes(np.full(256, 7.25, np.float32).tobytes())
    case = root / "case"
    (case / "sub").mkdir(parents=True, exist_ok=True)
    (case / "sub" / "weights.bin").write_bytes(np.zeros(128, np.float32).tobytes())
    for link, target in (("link.bin", outside / "secret.bin"), ("linkdir", outside)):
        try:
            if not (case / link).is_symlink():
                (case / link).symlink_to(target)
        except OSError:
            pass
    return case, outside


def _without_verdict(stderr: str) -> str:
    """stderr less the verdict lines a gate that stops prints even with --quiet (fail, inconclusive):
    "verdict: FAIL  reasons…" (wrapped) and its exit-code note, which are the CLI's answer, not noise."""
    head, sep, _ = stderr.partition("verdict: ")
    return head if sep else stderr


def check_outcome(rc: int, stderr: str, outputs: list[str], escaped: list[str]) -> str | None:
    """What is wrong with a run, or None: exit 0/1/3 with outputs, or exit 2 with one clear line and
    no output; never a traceback or internal error, never a file opened outside the sandbox."""
    if escaped:
        return f"opened outside the model's folder: {escaped[:3]}"
    if "Traceback" in stderr or "internal error" in stderr:
        return f"crash: {stderr.strip().splitlines()[-1][:300]}"
    if rc == 2:
        lines = stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("wwaudit: error:"):
            return f"exit 2 without one clear line: {stderr[:300]!r}"
        if outputs:
            return f"exit 2 left outputs behind: {outputs}"
        return None
    if rc not in (0, 1, 3):
        return f"exit code {rc}: {stderr[:300]!r}"
    if _without_verdict(stderr).strip():
        return f"noise on stderr: {stderr[:300]!r}"
    return None
