"""Synthetic ONNX models with real transformer shapes, weights in one external data file.

Run by hand (not in CI):

    python benchmarks/make_synthetic.py                 # bert-large, decoder-1b, decoder-1b-x2
    python benchmarks/make_synthetic.py --small         # tiny versions for a smoke run
    python benchmarks/make_synthetic.py --only bert-large

Shapes:
- bert-large: 24 layers, hidden 1024, FFN 4096, vocab 30522, 512 positions, 2 token types,
  pooler: 147 analysable matrices (the token-type table is 2 x 1024, too small). float32.
- decoder-1b: a TinyLlama-1.1B-shaped decoder: 22 layers, hidden 2048, grouped K/V 256, gated
  FFN 5632, vocab 32000, untied LM head: 1.1 B parameters in float16 (2.2 GB).
- decoder-1b-x2: the same with 44 layers, for the "peak memory does not grow with depth" check.

Weights are not pure noise, which would give a Marchenko-Pastur bulk and a degenerate tail fit:
each W = Z * r * c / sqrt(fan_in) with Z Gaussian and Pareto-distributed row and column scales
r, c, whose products give a heavy-tailed ESD like trained layers. Tensors are written one at a
time (memory stays at one tensor), 4 KiB aligned. A manifest.json beside each model lists every
weight (name, shape, dtype, offset, length, role) so the benchmark can build the equivalent torch
model and the floor computation from the same bytes.

Output: benchmarks/.data/<name>/model.onnx (+ model.onnx.data, manifest.json), git-ignored.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

DATA = Path(__file__).resolve().parent / ".data"
ALIGN = 4096


@dataclass(frozen=True)
class Shape:
    """A transformer shape: encoder (bert) or gated decoder with grouped K/V (llama)."""

    family: str  # bert | decoder
    layers: int
    hidden: int
    ffn: int
    vocab: int
    kv: int = 0  # decoder: K/V projection width
    positions: int = 0  # bert: learned position embeddings
    dtype: type = np.float32


SHAPES = {
    "bert-large": Shape("bert", 24, 1024, 4096, 30522, positions=512),
    "decoder-1b": Shape("decoder", 22, 2048, 5632, 32000, kv=256, dtype=np.float16),
    "decoder-1b-x2": Shape("decoder", 44, 2048, 5632, 32000, kv=256, dtype=np.float16),
}
SMALL = {
    "bert-large": Shape("bert", 2, 128, 512, 3000, positions=128),
    "decoder-1b": Shape("decoder", 2, 128, 352, 2000, kv=32, dtype=np.float16),
    "decoder-1b-x2": Shape("decoder", 4, 128, 352, 2000, kv=32, dtype=np.float16),
}


def model_dir(name: str, small: bool) -> Path:
    """Where a generated model lives."""
    return DATA / ("small" if small else "full") / name


def heavy_tailed(rng: np.random.Generator, rows: int, cols: int, dtype: type) -> np.ndarray:
    """Gaussian entries times Pareto row and column scales, / sqrt(rows): heavy-tailed ESD."""
    z = rng.standard_normal((rows, cols), dtype=np.float32)
    z *= (1.0 + rng.pareto(3.0, (rows, 1))).astype(np.float32)
    z *= (1.0 + rng.pareto(3.0, (1, cols))).astype(np.float32)
    z /= np.float32(np.sqrt(rows))
    return z.astype(dtype, copy=False)


class _Writer:
    """Appends tensors to the external data file and makes their external TensorProtos."""

    def __init__(self, folder: Path, dtype: type, seed: int) -> None:
        self.path = folder / "model.onnx.data"
        self.file = open(self.path, "wb")
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
        self.inits: list[TensorProto] = []
        self.manifest: list[dict] = []

    def weight(self, name: str, rows: int, cols: int, role: str) -> str:
        """A [rows, cols] weight: MatMul [in, out] (role linear) or Gather table (role embedding)."""
        arr = heavy_tailed(self.rng, rows, cols, self.dtype)
        offset = self.file.tell()
        pad = (-offset) % ALIGN
        self.file.write(b"\0" * pad)
        offset += pad
        self.file.write(arr.tobytes())
        t = TensorProto(name=name, dims=[rows, cols], data_type=self.elem, data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(arr.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.inits.append(t)
        self.manifest.append(
            {
                "name": name,
                "shape": [rows, cols],
                "dtype": np.dtype(self.dtype).name,
                "offset": offset,
                "length": arr.nbytes,
                "role": role,
            }
        )
        return name


def build(name: str, shape: Shape, folder: Path, seed: int = 0) -> Path:
    """Write one model; returns the .onnx path."""
    folder.mkdir(parents=True, exist_ok=True)
    w = _Writer(folder, shape.dtype, seed)
    H, nodes = shape.hidden, []

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def matmul(x: str, wname: str, rows: int, cols: int) -> str:
        return node("MatMul", [x, w.weight(wname, rows, cols, "linear")], f"{wname}_out")

    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"])]
    x = node("Gather", [w.weight("embed_tokens", shape.vocab, H, "embedding"), "ids"], "x_embed")
    if shape.family == "bert":
        inputs += [
            helper.make_tensor_value_info("pos", TensorProto.INT64, [1, "seq"]),
            helper.make_tensor_value_info("types", TensorProto.INT64, [1, "seq"]),
        ]
        p = node("Gather", [w.weight("embed_positions", shape.positions, H, "embedding"), "pos"], "x_pos")
        t = node("Gather", [w.weight("embed_types", 2, H, "embedding"), "types"], "x_types")
        x = node("Add", [node("Add", [x, p], "x_sum0"), t], "x_sum1")
    kv = shape.kv or H
    for i in range(shape.layers):
        pre = f"layers.{i}"
        q = matmul(x, f"{pre}.attn.q", H, H)
        k = matmul(x, f"{pre}.attn.k", H, kv)
        v = matmul(x, f"{pre}.attn.v", H, kv)
        # stand-in for attention that keeps the graph valid: q + mean over features of (k + v)
        mix = node("ReduceMean", [node("Add", [k, v], f"{pre}.kv")], f"{pre}.kv_mean", keepdims=1, axes=[-1])
        a = node("Add", [q, mix], f"{pre}.attn_mix")
        x = node("Add", [x, matmul(a, f"{pre}.attn.o", H, H)], f"{pre}.res1")
        if shape.family == "bert":
            h = node("Relu", [matmul(x, f"{pre}.ffn.up", H, shape.ffn)], f"{pre}.ffn.act")
        else:
            gate = node("Relu", [matmul(x, f"{pre}.ffn.gate", H, shape.ffn)], f"{pre}.ffn.act")
            h = node("Mul", [gate, matmul(x, f"{pre}.ffn.up", H, shape.ffn)], f"{pre}.ffn.h")
        x = node("Add", [x, matmul(h, f"{pre}.ffn.down", shape.ffn, H)], f"{pre}.res2")
    if shape.family == "bert":
        out = matmul(x, "pooler", H, H)
        out_dims = [1, "seq", H]
    else:
        out = matmul(x, "lm_head", H, shape.vocab)
        out_dims = [1, "seq", shape.vocab]
    w.file.close()
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info(out, w.elem, out_dims)], w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="wwaudit-benchmarks")
    path = folder / "model.onnx"
    onnx.save(model, path)  # the initializers already point at the data file: nothing inlined
    (folder / "manifest.json").write_text(
        json.dumps({"name": name, "family": shape.family, "layers": shape.layers, "weights": w.manifest}, indent=1)
    )
    return path


def ensure(name: str, small: bool) -> Path:
    """The model's path, generating it first if it is not there."""
    folder = model_dir(name, small)
    path = folder / "model.onnx"
    if not (path.exists() and (folder / "manifest.json").exists()):
        shape = (SMALL if small else SHAPES)[name]
        need = _nbytes(shape)
        free = shutil.disk_usage(DATA.parent).free
        if need * 1.2 > free:
            sys.exit(f"make_synthetic: {name} needs {need / 1e9:.1f} GB, only {free / 1e9:.1f} GB free")
        build(name, shape, folder)
    return path


def _nbytes(shape: Shape) -> int:
    H, kv = shape.hidden, shape.kv or shape.hidden
    per_layer = 2 * H * H + 2 * H * kv + (3 if shape.family == "decoder" else 2) * H * shape.ffn
    total = shape.layers * per_layer + 2 * shape.vocab * H + shape.positions * H
    return total * np.dtype(shape.dtype).itemsize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes for a smoke run")
    parser.add_argument("--only", choices=sorted(SHAPES), action="append", help="generate only these")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    for name in args.only or sorted(SHAPES):
        path = ensure(name, args.small)
        print(f"{name}: {path} ({_nbytes((SMALL if args.small else SHAPES)[name]) / 1e6:.1f} MB of weights)")


if __name__ == "__main__":
    main()
