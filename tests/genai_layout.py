"""Decoder models in the layout onnxruntime-genai's model builder writes, without the builder.

The builder (`python -m onnxruntime_genai.models.builder -p int4 -e cpu`, version 0.18) turns a
Hugging Face Llama/Phi/Qwen checkpoint into one `model.onnx` plus one `model.onnx.data` holding
every initializer. This generator reproduces that layout from the builder's source (base.py:
make_embedding_lookup, make_attention_input_proj, make_matmul, to_nbits, save_model) so tests
and benchmarks can make models of any size, including a Llama-2-7B shape, in seconds and in
bounded memory (tensors are written one by one, never all held at once):

- node `/model/layers.{i}/attn/qkv_proj/MatMul_Q4` (MatMulNBits, com.microsoft) with
  initializers `model.layers.{i}.attn.qkv_proj.MatMul.weight_Q4` [N, K/bs, bs/2] uint8,
  `...weight_scales` [N, K/bs] float32 and, asymmetric, `...weight_zero_points` [N, ⌈K/bs/2⌉];
  or separate `q_proj`/`k_proj`/`v_proj` (fuse_qkv=false);
- GroupQueryAttention (num_heads, kv_num_heads) taking packed QKV as its query input with empty
  key/value inputs, or the three projections; `cos_cache`/`sin_cache` [max_pos, head/2];
- o_proj, mlp gate_proj/up_proj/down_proj MatMulNBits, (Skip)SimplifiedLayerNormalization
  weights, `/lm_head/MatMul_Q4` with output `logits`;
- the embedding: Gather on float `model.embed_tokens.weight`, or, tied (shared_embeddings), a
  Reshape of `lm_head.MatMul.weight_Q4` into GatherBlockQuantized with the head's scales.

`data_offset` starts the data file's first tensor at that offset, leaving a sparse hole before
it: the > 2 GiB external-data path without writing 2 GiB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

MS = "com.microsoft"


@dataclass
class DecoderConfig:
    """Shape and options of a generated decoder (defaults: a tiny Llama with GQA)."""

    layers: int = 2
    hidden: int = 128
    intermediate: int = 352
    vocab: int = 512
    heads: int = 4
    kv_heads: int = 2
    block_size: int = 32
    packed_qkv: bool = True
    tied: bool = False
    symmetric: bool = True
    max_positions: int = 256
    seed: int = 0
    data_offset: int = 0
    # "gaussian": N(0, 0.02) weights quantized per block (what a random-initialised checkpoint
    # becomes); "codes": uniform random 4-bit codes and scales (fast, for multi-GB benchmarks).
    weights: str = "gaussian"
    # Keep every MatMulNBits weight's dequantized (N x K) matrix, by readable name (small models only).
    keep: bool = False
    kept: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads


class _DataWriter:
    """Appends tensors to one external-data file and makes their TensorProtos point at them."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.fh = open(path, "wb")
        self.fh.truncate(offset)
        self.fh.seek(offset)
        self.initializers: list[TensorProto] = []

    def add(self, name: str, array: np.ndarray, data_type: int, dims: list[int] | None = None) -> str:
        raw = np.ascontiguousarray(array).tobytes()
        offset = self.fh.tell()
        self.fh.write(raw)
        pad = (-self.fh.tell()) % 64
        self.fh.write(b"\0" * pad)
        tensor = TensorProto(name=name, data_type=data_type, dims=list(dims if dims is not None else array.shape))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        return name

    def close(self) -> None:
        self.fh.close()


def _quantize(w: np.ndarray, block: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(packed B [N, blocks, block/2], scales [N, blocks], zero points or None, dequantized W) of W (N x K).

    MatMulNBits' layout: per output row, K split in blocks (zero padded), two 4-bit codes per
    byte, low nibble first; W = (code - zero_point) x scale, zero point 8 when symmetric.
    """
    n, k = w.shape
    blocks = -(-k // block)
    padded = np.zeros((n, blocks * block), np.float32)
    padded[:, :k] = w
    grouped = padded.reshape(n, blocks, block)
    if symmetric:
        scale = np.abs(grouped).max(axis=2) / 7.0
        zero = np.full((n, blocks), 8, np.uint8)
    else:
        lo, hi = np.minimum(grouped.min(axis=2), 0), np.maximum(grouped.max(axis=2), 0)
        scale = (hi - lo) / 15.0
        zero = np.clip(np.round(-lo / np.where(scale == 0, 1, scale)), 0, 15).astype(np.uint8)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    codes = np.clip(np.round(grouped / scale[:, :, None]) + zero[:, :, None], 0, 15).astype(np.uint8)
    return _pack(codes, scale, zero, symmetric)


def _pack(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, symmetric: bool):
    n, blocks, block = codes.shape
    packed = (codes[:, :, 0::2] | (codes[:, :, 1::2] << 4)).astype(np.uint8)
    dequant = ((codes.astype(np.float32) - zero[:, :, None]) * scale[:, :, None]).reshape(n, blocks * block)
    zp = None
    if not symmetric:
        flat = zero.reshape(n, blocks)
        if blocks % 2:
            flat = np.concatenate([flat, np.zeros((n, 1), np.uint8)], axis=1)
        zp = (flat[:, 0::2] | (flat[:, 1::2] << 4)).astype(np.uint8)
    return packed, scale, zp, dequant


def _random_codes(rng: np.random.Generator, n: int, k: int, block: int):
    blocks = -(-k // block)
    packed = rng.integers(0, 256, size=(n, blocks, block // 2), dtype=np.uint8)
    scale = (0.002 + 0.001 * rng.random((n, blocks), dtype=np.float32)).astype(np.float32)
    return packed, scale, None, None


class _Builder:
    def __init__(self, folder: Path, cfg: DecoderConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.data = _DataWriter(folder / "model.onnx.data", cfg.data_offset)
        self.nodes: list[onnx.NodeProto] = []
        self.inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
        self.inputs += [helper.make_tensor_value_info(n, TensorProto.INT32, [1]) for n in ("seqlens_k", "total_seq_len")]
        self.outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", cfg.vocab])]

    def matmul(self, base: str, x: str, n: int, k: int, output: str | None = None) -> str:
        """One MatMulNBits named as the builder's to_nbits pass names it."""
        cfg = self.cfg
        if cfg.weights == "codes":
            packed, scale, zp, dequant = _random_codes(self.rng, n, k, cfg.block_size)
        else:
            w = (0.02 * self.rng.standard_normal((n, k), dtype=np.float32)).astype(np.float32)
            packed, scale, zp, dequant = _quantize(w, cfg.block_size, cfg.symmetric)
        stem = base[1:].replace("/", ".") + ".MatMul"
        inputs = [
            x,
            self.data.add(f"{stem}.weight_Q4", packed, TensorProto.UINT8),
            self.data.add(f"{stem}.weight_scales", scale, TensorProto.FLOAT),
        ]
        if zp is not None:
            inputs.append(self.data.add(f"{stem}.weight_zero_points", zp, TensorProto.UINT8))
        if cfg.keep and dequant is not None:
            cfg.kept[base[1:].replace("/", ".")] = dequant[:, :k]
        out = output or f"{base}/MatMul/output_0"
        self.nodes.append(
            helper.make_node(
                "MatMulNBits", inputs, [out], name=f"{base}/MatMul_Q4", domain=MS,
                K=k, N=n, bits=4, block_size=cfg.block_size, accuracy_level=4,
            )
        )  # fmt: skip
        return out

    def norm(self, name: str, x: str, skip: str | None = None) -> str:
        weight = self.data.add(f"{name[1:].replace('/', '.')}.weight", np.ones(self.cfg.hidden, np.float32), TensorProto.FLOAT)
        out = f"{name}/output_0"
        if skip is None:
            self.nodes.append(
                helper.make_node("SimplifiedLayerNormalization", [x, weight], [out], name=f"{name}/LayerNorm", epsilon=1e-6)
            )
        else:
            self.nodes.append(
                helper.make_node(
                    "SkipSimplifiedLayerNormalization",
                    [x, skip, weight],
                    [out],
                    name=f"{name}/SkipLayerNorm",
                    domain=MS,
                    epsilon=1e-6,
                )
            )
        return out

    def attention(self, i: int, x: str) -> str:
        cfg = self.cfg
        q, kv = cfg.heads * cfg.head_size, cfg.kv_heads * cfg.head_size
        base = f"/model/layers.{i}/attn"
        if cfg.packed_qkv:
            qkv = [self.matmul(f"{base}/qkv_proj", x, q + 2 * kv, cfg.hidden), "", ""]
        else:
            qkv = [self.matmul(f"{base}/{p}_proj", x, size, cfg.hidden) for p, size in (("q", q), ("k", kv), ("v", kv))]
        past = [f"past_key_values.{i}.{kind}" for kind in ("key", "value")]
        shape = ["batch_size", cfg.kv_heads, "past_sequence_length", cfg.head_size]
        self.inputs += [helper.make_tensor_value_info(p, TensorProto.FLOAT, shape) for p in past]
        self.outputs += [helper.make_tensor_value_info(f"present.{i}.{k}", TensorProto.FLOAT, shape) for k in ("key", "value")]
        out = f"{base}/GroupQueryAttention/output_0"
        self.nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                [*qkv, *past, "seqlens_k", "total_seq_len", "cos_cache", "sin_cache"],
                [out, f"present.{i}.key", f"present.{i}.value"],
                name=f"{base}/GroupQueryAttention", domain=MS,
                num_heads=cfg.heads, kv_num_heads=cfg.kv_heads, do_rotary=1, local_window_size=-1,
            )
        )  # fmt: skip
        return self.matmul(f"{base}/o_proj", out, cfg.hidden, q)

    def mlp(self, i: int, x: str) -> str:
        cfg = self.cfg
        base = f"/model/layers.{i}/mlp"
        gate = self.matmul(f"{base}/gate_proj", x, cfg.intermediate, cfg.hidden)
        up = self.matmul(f"{base}/up_proj", x, cfg.intermediate, cfg.hidden)
        self.nodes.append(helper.make_node("Sigmoid", [gate], [f"{base}/act_fn/Sigmoid/output_0"], name=f"{base}/act_fn/Sigmoid"))
        self.nodes.append(
            helper.make_node(
                "Mul", [gate, f"{base}/act_fn/Sigmoid/output_0"], [f"{base}/act_fn/Mul/output_0"], name=f"{base}/act_fn/Mul"
            )
        )
        self.nodes.append(
            helper.make_node("Mul", [f"{base}/act_fn/Mul/output_0", up], [f"{base}/Mul/output_0"], name=f"{base}/Mul")
        )
        return self.matmul(f"{base}/down_proj", f"{base}/Mul/output_0", cfg.hidden, cfg.intermediate)

    def embedding(self) -> str:
        cfg = self.cfg
        if not cfg.tied:
            table = (0.02 * self.rng.standard_normal((cfg.vocab, cfg.hidden), dtype=np.float32)).astype(np.float32)
            if cfg.keep:
                cfg.kept["model.embed_tokens"] = table
            weight = self.data.add("model.embed_tokens.weight", table, TensorProto.FLOAT)
            self.nodes.append(
                helper.make_node(
                    "Gather", [weight, "input_ids"], ["/model/embed_tokens/Gather/output_0"], name="/model/embed_tokens/Gather"
                )
            )
            return "/model/embed_tokens/Gather/output_0"
        shape = self.data.add(
            f"/model/constants/INT64/[{cfg.vocab}, {cfg.hidden // 2}]",
            np.array([cfg.vocab, cfg.hidden // 2], np.int64),
            TensorProto.INT64,
        )
        self.nodes.append(
            helper.make_node(
                "Reshape",
                ["lm_head.MatMul.weight_Q4", shape],
                ["/model/embed_tokens/Reshape/output_0"],
                name="/model/embed_tokens/Reshape",
            )
        )
        out = "/model/embed_tokens/GatherBlockQuantized/output_0"
        self.nodes.append(
            helper.make_node(
                "GatherBlockQuantized", ["/model/embed_tokens/Reshape/output_0", "input_ids", "lm_head.MatMul.weight_scales"], [out],
                name="/model/embed_tokens/GatherBlockQuantized", domain=MS, bits=4, block_size=cfg.block_size, gather_axis=0, quantize_axis=1,
            )
        )  # fmt: skip
        return out

    def rotary_caches(self) -> None:
        cfg = self.cfg
        inv = 1.0 / (10000 ** (np.arange(0, cfg.head_size, 2, dtype=np.float32) / cfg.head_size))
        angles = np.outer(np.arange(cfg.max_positions, dtype=np.float32), inv)
        self.data.add("cos_cache", np.cos(angles).astype(np.float32), TensorProto.FLOAT)
        self.data.add("sin_cache", np.sin(angles).astype(np.float32), TensorProto.FLOAT)


def write_decoder(folder: str | os.PathLike, cfg: DecoderConfig | None = None) -> Path:
    """Write `model.onnx` and `model.onnx.data` in the builder's layout into `folder`; returns the model path.

    The lm_head is generated first when tied (the embedding reads its weight), so tensor order
    in the data file differs from the builder's; names, shapes, ops and attributes do not.
    """
    cfg = cfg or DecoderConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    b = _Builder(folder, cfg)
    final = "/model/layers.{}/final_norm_layernorm".format(cfg.layers)
    head = None
    try:
        b.rotary_caches()
        if cfg.tied:  # the head's weights exist before the embedding that reuses them; its node comes last
            b.matmul("/lm_head", f"{final}/output_0", cfg.vocab, cfg.hidden, output="logits")
            head = b.nodes.pop()
        x = b.embedding()
        for i in range(cfg.layers):
            h = b.norm(f"/model/layers.{i}/input_layernorm", x)
            a = b.attention(i, h)
            h2 = b.norm(f"/model/layers.{i}/post_attention_layernorm", a, skip=x)
            x = b.mlp(i, h2)
        b.norm(final, x)
        if head is None:
            b.matmul("/lm_head", f"{final}/output_0", cfg.vocab, cfg.hidden, output="logits")
        else:
            b.nodes.append(head)
    finally:
        b.data.close()
    graph = helper.make_graph(b.nodes, "main_graph", b.inputs, b.outputs, b.data.initializers)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxruntime-genai", ir_version=10)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path
