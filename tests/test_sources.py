"""safetensors and GGUF sources, `wwaudit describe`, and the same weights across formats.

The same torch model (weights rounded to float16) saved as ONNX, safetensors (one file and two
shards) and GGUF F16 gives the same layers and exactly the same alpha; GGUF Q8_0 stays within
its rounding (each value off by at most half a quantization step d = max|w|/127 of its 32-value
block, plus the float16 rounding of d itself: d·(1/2 + 127·2⁻¹¹)), and alpha within 2%. wwaudit's GGML dequantizers equal gguf's own for every type they support.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import source_models as sm
from wwaudit.compare.engine import compare
from wwaudit.engine.core import audit
from wwaudit.engine.describe import describe
from wwaudit.errors import InputError
from wwaudit.ingest import tensors as tensors_module
from wwaudit.ingest import storage as storage_module
from wwaudit.ingest.sources import ggml, open_source
from wwaudit.options import AuditOptions

gguf = pytest.importorskip("gguf")
REPO = Path(__file__).resolve().parents[1]
OPTS = AuditOptions(workers=1, fast=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    model = sm.net()
    return {
        "onnx": sm.save_onnx(model, d / "m.onnx"),
        "safetensors": sm.save_safetensors(model, d / "m.safetensors"),
        "sharded": sm.save_sharded(model, d / "sharded"),
        "gguf_f16": sm.save_gguf(model, d / "f16.gguf"),
        "gguf_q8_0": sm.save_gguf(model, d / "q8.gguf", "Q8_0"),
        "gguf_q4_0": sm.save_gguf(model, d / "q4.gguf", "Q4_0"),
    }


def _layers(path: Path) -> list[tuple]:
    result = audit(str(path), OPTS)
    return [(layer.kind, layer.N, layer.M, layer.slices, layer.metric("alpha")) for layer in result.layers if layer.N]


# ---------------------------------------------------------------------------------------------
# GGML dequantization: llama.cpp's arithmetic, checked against the gguf package
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in ggml.BLOCK_TYPES if not n.endswith("_K")])
def test_legacy_types_equal_gguf(name: str) -> None:
    x = np.random.default_rng(1).standard_normal((6, 256)).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[name]
    q = gguf.quants.quantize(x, qtype)
    mine = ggml.dequantize(q.reshape(-1).view(np.uint8), name, x.size).reshape(x.shape)
    np.testing.assert_array_equal(mine, gguf.quants.dequantize(q, qtype))
    assert np.abs(mine - x).max() < 0.5  # a dequantization, not a copy of the bytes


@pytest.mark.parametrize("name,f16_at", [("Q4_K", (0, 2)), ("Q6_K", (208,))])
def test_k_quants_equal_gguf(name: str, f16_at: tuple[int, ...]) -> None:
    """gguf cannot quantize k-quants in Python: random blocks with finite scales test every bit path."""
    per, size, _ = ggml.BLOCK_TYPES[name]
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (40, size), dtype=np.uint8)
    for at in f16_at:
        raw[:, at : at + 2] = rng.uniform(0.001, 0.1, (40, 1)).astype(np.float16).view(np.uint8)
    expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(-1)
    mine = ggml.dequantize(raw.reshape(-1), name, 40 * per)
    np.testing.assert_array_equal(mine, expected)
    assert np.unique(mine).size > 100


# ---------------------------------------------------------------------------------------------
# The same weights in every format
# ---------------------------------------------------------------------------------------------
def test_lossless_formats_give_identical_layers_and_alpha(saved: dict[str, Path]) -> None:
    reference = _layers(saved["onnx"])
    assert len(reference) == 4 and all(alpha is not None for *_, alpha in reference)
    for key in ("safetensors", "sharded", "gguf_f16"):
        assert _layers(saved[key]) == reference, key


def test_q8_0_within_its_rounding(saved: dict[str, Path]) -> None:
    weights = sm.state(sm.net())["fc2.weight"]
    spec = next(s for s in open_source(str(saved["gguf_q8_0"])).layers() if s.tensor.name == "fc2.weight")
    values = spec.matrices()[0]
    blocks = weights.reshape(-1, 32)
    step = (np.abs(blocks).max(axis=1, keepdims=True) / 127).repeat(32, axis=1).reshape(weights.shape)
    error = np.abs(values - weights)
    # half a step, plus 127 codes times the float16 rounding of the block's scale (2^-11 relative)
    assert error.max() > 0 and np.all(error <= step * (0.5 + 127 * 2.0**-11) + 1e-9)
    for (kind, n, m, s, alpha), (*shape, ref) in zip(_layers(saved["gguf_q8_0"]), _layers(saved["onnx"])):
        assert (kind, n, m, s) == tuple(shape) and abs(alpha - ref) <= 0.02 * ref


def test_gguf_layers_say_how_they_were_stored(saved: dict[str, Path]) -> None:
    result = audit(str(saved["gguf_q4_0"]), OPTS)
    dense = [layer for layer in result.layers if layer.N]
    assert {layer.dtype for layer in dense} == {"q4_0"}
    assert all(layer.quantization == "GGUF Q4_0 blocks" for layer in dense)
    assert result.model.producer == "gguf" and result.model.parameters == sum(v.size for v in sm.state(sm.net()).values())


def test_compare_onnx_with_safetensors_has_zero_deltas(saved: dict[str, Path]) -> None:
    result = compare(str(saved["onnx"]), str(saved["safetensors"]), OPTS)
    assert len(result.pairs) == 4 and not result.unmatched_base and not result.unmatched_candidate
    for pair in result.pairs:
        assert pair.status == "ok"
        assert pair.relative_distance == 0.0
        assert all(delta == 0.0 for delta in pair.delta.values() if delta is not None), pair.delta


def test_sharded_folder_is_ordered_by_name_not_by_shard(saved: dict[str, Path]) -> None:
    names = [s.tensor.name for s in open_source(str(saved["sharded"])).layers()]
    assert names == ["embed.weight", "fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight", "head.bias", "head.weight"]


def test_config_architecture_tells_transposed_projections(tmp_path: Path) -> None:
    """GPT-2 stores its projections [in, out] (Conv1D): config.json's model_type says so."""
    model = sm.net()
    plain = sm.save_sharded(model, tmp_path / "plain")
    gpt2 = sm.save_sharded(model, tmp_path / "gpt2", {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    views = {s.tensor.name: s.view.recipe for s in open_source(str(gpt2)).layers() if s.view}
    assert views["fc1.weight"] == "matrix_t" and views["embed.weight"] == "matrix"
    assert {s.tensor.name: s.view.recipe for s in open_source(str(plain)).layers() if s.view}["fc1.weight"] == "matrix"
    assert open_source(str(gpt2)).info().graph_name == "GPT2LMHeadModel"


# ---------------------------------------------------------------------------------------------
# describe: the inventory, from the header alone
# ---------------------------------------------------------------------------------------------
def _sparse_onnx(folder: Path, rows: int, cols: int) -> Path:
    """A MatMul whose [rows, cols] float32 weight is external data in a sparse file: no disk used."""
    import onnx
    from onnx import TensorProto, helper

    (folder / "w.bin").touch()
    os.truncate(folder / "w.bin", rows * cols * 4)
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[rows, cols])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(rows * cols * 4))):
        w.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [w],
    )
    path = folder / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _sparse_safetensors(path: Path, shapes: dict[str, tuple[int, int]]) -> Path:
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = shape[0] * shape[1] * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little") + blob)
    os.truncate(path, 8 + len(blob) + offset)
    return path


def test_describe_reads_no_weight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 GiB ONNX weight and a 70B-sized safetensors layer are described without touching their bytes."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("describe read a weight")

    monkeypatch.setattr(tensors_module.TensorRef, "load", refuse)
    monkeypatch.setattr(storage_module, "map_range", refuse, raising=True)
    monkeypatch.setattr(storage_module.DataFile, "read", refuse, raising=True)
    big = _sparse_onnx(tmp_path, 131072, 131072)
    st = _sparse_safetensors(
        tmp_path / "big.safetensors", {"model.embed_tokens.weight": (128256, 8192), "lm_head.weight": (128256, 8192)}
    )
    start = time.perf_counter()
    onnx_inv = describe(str(big)).to_dict()
    st_inv = describe(str(st)).to_dict()
    assert time.perf_counter() - start < 30
    (entry,) = onnx_inv["tensors"]
    assert entry["bytes"] == 131072 * 131072 * 4 and entry["analysed"] and entry["kind"] == "dense"
    assert [t["op"] for t in st_inv["tensors"]] == ["Linear (head)", "Embedding"]
    assert st_inv["model"]["stored_bytes"] == 2 * 128256 * 8192 * 2 and st_inv["model"]["parameters"] == 2 * 128256 * 8192


def test_describe_cli_text_and_json(saved: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "inv.json"
    proc = subprocess.run(
        [sys.executable, "-m", "wwaudit", "describe", str(saved["gguf_q8_0"]), "--json", str(out)], capture_output=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    inventory = json.loads(out.read_text())
    assert inventory["schema"] == "wwaudit-describe/1" and inventory["model"]["format"] == "gguf"
    fc1 = next(t for t in inventory["tensors"] if t["tensor"] == "fc1.weight")
    assert (fc1["dtype"], fc1["bytes"], fc1["N"], fc1["M"]) == ("q8_0", 256 * 64 // 32 * 34, 256, 64)
    bias = next(t for t in inventory["tensors"] if t["tensor"] == "fc1.bias")
    assert not bias["analysed"] and "1-D" in bias["reason"]
    text = subprocess.run(
        [sys.executable, "-m", "wwaudit", "describe", str(saved["onnx"])], capture_output=True, env=env, text=True
    )
    assert text.returncode == 0 and "embedding 512x64" in text.stdout and "4 of 4 layers analysable" in text.stdout


def test_missing_gguf_package_is_one_line(saved: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(InputError, match=r"needs the optional 'gguf' package: pip install 'wwaudit\[gguf\]'"):
        open_source(str(saved["gguf_f16"]))


def test_cli_audits_a_sharded_folder_as_one_model(saved: dict[str, Path], tmp_path: Path) -> None:
    """A folder with model.safetensors.index.json is one model, for `wwaudit` and for a zoo run."""
    from wwaudit.engine.zoo import model_paths

    assert model_paths([str(saved["sharded"])]) == [str(saved["sharded"])]
    out = tmp_path / "audit.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "wwaudit", str(saved["sharded"]), "-q", "--fast", "--workers", "1", "--json", str(out)],
        capture_output=True,
        env=env,
        text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(out.read_text())
    assert result["model"]["producer"] == "safetensors" and result["model"]["external_data"] is True
    assert sorted(layer["tensor"] for layer in result["layers"] if layer["status"] == "ok") == [
        "embed.weight",
        "fc1.weight",
        "fc2.weight",
        "head.weight",
    ]
