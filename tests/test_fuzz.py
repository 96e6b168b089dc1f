"""Property-based fuzzing of the untrusted-input path: loader -> graph walker -> layer planning ->
tensor reads, on mutated valid ONNX files. The only acceptable outcomes are success or an
InputError (one clear line, exit 2, in the CLI); any other exception is a bug. No file outside the
model's folder may be opened, whatever the mutated external-data fields say.

Two mutators: raw bytes (flips, truncation, insertion, varint blow-ups) exercise the protobuf
parse and the loader's checks; field-level mutations (dims, dtypes, raw_data, external-data
location/offset/length, node wiring) reach the walker and the tensor readers with well-formed
protobuf. Examples are derandomised so CI runs are reproducible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import fuzz_models
from test_hostile import recording_opens
from wwaudit.ingest.walker import walk
from wwaudit.ingest.plan import plan_layers
from wwaudit.engine.limits import memory_refusal, working_set_bytes
from wwaudit.ingest.loader import load_model
from wwaudit.errors import InputError

# Small on purpose: any tensor a mutation inflates beyond this is refused like --max-memory would.
FUZZ_MAX_MEMORY = 64 << 20
SETTINGS = dict(
    deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _base_model() -> onnx.ModelProto:
    """Every place weights hide, small: initializers, external data, Constant, sparse, If, function."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 12)).astype(np.float32), "w1")
    w2 = rng.standard_normal((12, 8)).astype(np.float16)
    ext = TensorProto()
    ext.CopyFrom(numpy_helper.from_array(rng.standard_normal((12, 8)).astype(np.float32), "w_ext"))
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(12 * 8 * 4))):
        entry = ext.external_data.add()
        entry.key, entry.value = key, value
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "w_sparse"),
        numpy_helper.from_array(np.array([0, 17, 40], np.int64), "w_sparse_idx"),
        [8, 8],
    )
    y = [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 8])]
    then_branch = helper.make_graph([helper.make_node("MatMul", ["h", "w_ext"], ["t"], name="fc_then")], "then", [], y)
    else_branch = helper.make_graph([helper.make_node("Gemm", ["h", "w_c"], ["t"], name="fc_else", transB=0)], "else", [], y)
    fn = helper.make_function(
        "local", "Block", ["a", "b"], ["c"], [helper.make_node("MatMul", ["a", "b"], ["c"])], [helper.make_opsetid("", 17)]
    )
    nodes = [
        helper.make_node(
            "Constant", [], ["w_c"], value=numpy_helper.from_array(rng.standard_normal((12, 8)).astype(np.float32), "w_c")
        ),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("If", ["cond"], ["t"], name="branch", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Block", ["t", "w2"], ["u"], domain="local", name="call"),
        helper.make_node("MatMul", ["u8", "w_sparse"], ["y"], name="fc_sparse"),
        helper.make_node("Cast", ["t"], ["u8"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "fuzz",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [w1, numpy_helper.from_array(w2, "w2"), ext],
        sparse_initializer=[sparse],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model.functions.append(fn)
    return model


BASE = _base_model()
BASE_BYTES = BASE.SerializeToString()
EXTERNAL_DATA = np.random.default_rng(0).standard_normal(12 * 8 * 2).astype(np.float32).tobytes()
NASTY_LOCATIONS = fuzz_models.LOCATIONS[:-1]  # the campaign's list less its last, valid "sub/weights.bin"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model folder with a data file, a symlink and a symlinked folder pointing at a decoy."""
    root = tmp_path_factory.mktemp("fuzz")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(EXTERNAL_DATA)
    model_dir = root / "model"
    (model_dir / "sub").mkdir(parents=True)
    (model_dir / "weights.bin").write_bytes(EXTERNAL_DATA)
    (model_dir / "sub" / "weights.bin").write_bytes(EXTERNAL_DATA)
    try:
        (model_dir / "link.bin").symlink_to(outside / "secret.bin")
        (model_dir / "linkdir").symlink_to(outside, target_is_directory=True)
    except OSError:
        pass
    return model_dir, outside


def _exercise(data: bytes, sandbox: tuple[Path, Path]) -> None:
    """Load, walk, plan and read every planned layer; only InputError may escape."""
    model_dir, outside = sandbox
    path = model_dir / "model.onnx"
    path.write_bytes(data)
    with recording_opens() as opened:
        try:
            loaded = load_model(str(path))
            walked = walk(loaded.proto, loaded.base_dir)
            for spec in plan_layers(walked):
                if spec.skipped:
                    continue
                N, M, slices = spec.shape_info()
                if memory_refusal(
                    working_set_bytes(spec.tensor.size, N, M, 8, True, False), FUZZ_MAX_MEMORY
                ):  # widened to float64 below
                    continue
                try:
                    mats = spec.matrices()
                except InputError:
                    continue  # one layer's error: the audit reports it and goes on
                assert all(np.asarray(m).ndim == 2 for m in mats)
        except InputError as exc:
            assert str(exc) and "\n" not in str(exc).strip()
    escaped = [p for p in opened if p.startswith(str(outside))]
    assert not escaped, f"opened outside the model's folder: {escaped}"


def test_base_model_is_fully_read(sandbox) -> None:
    """The fuzz seed itself audits: every weight-holding place is reached and read."""
    path = sandbox[0] / "model.onnx"
    path.write_bytes(BASE_BYTES)
    loaded = load_model(str(path))
    specs = [s for s in plan_layers(walk(loaded.proto, loaded.base_dir)) if not s.skipped]
    names = {s.tensor.name for s in specs}
    assert {"w1", "w2", "w_ext", "w_c", "w_sparse"} <= names
    for spec in specs:
        assert all(np.isfinite(m).all() for m in spec.matrices())


# -- byte-level mutations ----------------------------------------------------------------------
_edit = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(BASE_BYTES) - 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(BASE_BYTES) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(BASE_BYTES)), st.binary(min_size=1, max_size=12)),
    st.tuples(
        st.just("varint"),
        st.integers(0, len(BASE_BYTES) - 1),
        st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"\x00", b"\x7f"]),
    ),
    st.tuples(st.just("delete"), st.integers(0, len(BASE_BYTES) - 1), st.integers(1, 16)),
)


def _apply(data: bytearray, edit) -> bytearray:
    kind, pos, arg = edit
    pos = min(pos, len(data))
    if kind == "flip" and pos < len(data):
        data[pos] ^= arg
    elif kind == "truncate":
        del data[pos:]
    elif kind == "insert":
        data[pos:pos] = arg
    elif kind == "varint":
        data[pos : pos + len(arg)] = arg
    elif kind == "delete":
        del data[pos : pos + arg]
    return data


@settings(max_examples=1200, **SETTINGS)
@given(st.lists(_edit, min_size=1, max_size=4))
def test_byte_mutations_raise_only_input_errors(sandbox, edits) -> None:
    data = bytearray(BASE_BYTES)
    for edit in edits:
        data = _apply(data, edit)
    _exercise(bytes(data), sandbox)


# -- field-level mutations ---------------------------------------------------------------------
def _all_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    from wwaudit.ingest.loader import all_tensors

    return list(all_tensors(model))


_dims = st.lists(st.one_of(st.integers(-3, 40), st.sampled_from([0, 1 << 31, 1 << 62, -(1 << 40)])), max_size=4)
_field_edit = st.one_of(
    st.tuples(st.just("dims"), st.integers(0, 20), _dims),
    st.tuples(st.just("dtype"), st.integers(0, 20), st.integers(-2, 30)),
    st.tuples(st.just("raw"), st.integers(0, 20), st.binary(max_size=64)),
    st.tuples(st.just("location"), st.integers(0, 20), st.sampled_from(NASTY_LOCATIONS)),
    st.tuples(st.just("offset"), st.integers(0, 20), st.sampled_from(["0", "4", "-8", "1e3", "99999999999999", "x", "384"])),
    st.tuples(st.just("length"), st.integers(0, 20), st.sampled_from(["0", "384", "383", "-1", "", "768", "x"])),
    st.tuples(st.just("external"), st.integers(0, 20), st.sampled_from(NASTY_LOCATIONS)),
    st.tuples(st.just("rewire"), st.integers(0, 20), st.sampled_from(["x", "h", "t", "w1", "w2", "w_ext", "", "y", "u"])),
    st.tuples(
        st.just("op"),
        st.integers(0, 20),
        st.sampled_from(["Gemm", "Conv", "LSTM", "Gather", "Einsum", "ConvTranspose", "Attention", "Block", "If", "Nope"]),
    ),
)


def _set_external(t: TensorProto, key: str, value: str) -> None:
    for entry in t.external_data:
        if entry.key == key:
            entry.value = value
            return
    entry = t.external_data.add()
    entry.key, entry.value = key, value


def _mutate(model: onnx.ModelProto, edit) -> None:
    kind, index, arg = edit
    tensors = _all_tensors(model)
    t = tensors[index % len(tensors)]
    if kind == "dims":
        del t.dims[:]
        t.dims.extend(arg)
    elif kind == "dtype":
        t.data_type = arg
    elif kind == "raw":
        t.raw_data = arg
    elif kind in ("location", "offset", "length"):
        _set_external(t, kind, arg)
    elif kind == "external":
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        _set_external(t, "location", arg)
    elif kind in ("rewire", "op"):
        nodes = list(model.graph.node)
        node = nodes[index % len(nodes)]
        if kind == "op":
            node.op_type = arg
        elif node.input:
            node.input[index % len(node.input)] = arg


@settings(max_examples=1200, **SETTINGS)
@given(st.lists(_field_edit, min_size=1, max_size=4))
def test_field_mutations_raise_only_input_errors(sandbox, edits) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(BASE)
    for edit in edits:
        _mutate(model, edit)
    _exercise(model.SerializeToString(), sandbox)


# -- structure-aware generators through the whole CLI (tests/fuzz_models.py) -----------------------
CI_CASES = 48  # 6 per family; benchmarks/fuzz_campaign.py runs the same generators 10,000 times


@pytest.mark.parametrize("seed", range(CI_CASES))
def test_structure_aware_cases_end_cleanly(seed: int, tmp_path: Path, capsys) -> None:
    """Each generated model through `wwaudit`: exit 0/1 with outputs, or exit 2 with one clear line
    and nothing written; no traceback, no read outside the sandbox, no temp file left."""
    import os

    import fuzz_models
    from wwaudit.cli.main import main

    case, outside = fuzz_models.prepare_sandbox(tmp_path)
    model, families, args = fuzz_models.make_case(seed, case)
    out = tmp_path / "out"
    out.mkdir()
    with recording_opens() as opened:
        rc = main(
            [
                model,
                "--json",
                str(out / "a.json"),
                "--csv",
                str(out / "a.csv"),
                "--quiet",
                "--fast",
                "--workers",
                "1",
                "--max-memory",
                "64M",
                "--timeout",
                "120",
                *args,
            ]
        )
    err = capsys.readouterr().err
    escaped = [p for p in opened if p.startswith(str(outside.resolve()))]
    problem = fuzz_models.check_outcome(rc, err, sorted(os.listdir(out)) if rc == 2 else [], escaped)
    assert problem is None, (seed, families, problem)
    assert not [n for n in os.listdir(out) if n.startswith(".wwaudit-")]
    if rc in (0, 1):
        assert sorted(os.listdir(out)) == ["a.csv", "a.json"]
