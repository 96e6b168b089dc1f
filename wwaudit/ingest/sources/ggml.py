"""Dequantization of GGML's block-quantized tensor types, as llama.cpp's ggml-quants.c does it.

Written from ggml's reference `dequantize_row_*` functions in numpy, block by block, so that
wwaudit does not depend on a particular `gguf` release's Python port for the values it audits;
tests check every type against `gguf.quants.dequantize`. Each function takes the raw bytes of
whole blocks (uint8, shape [n_blocks, block_bytes]) and returns float32 [n_blocks, block_size].
"""

from __future__ import annotations

from typing import Callable

import numpy as np

QK = 32  # elements per block of the legacy types (Q4_0 ... Q8_0)
QK_K = 256  # elements per super-block of the k-quants


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of every block, as a float32 column."""
    return blocks[:, start : start + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Low nibbles first, then high nibbles: ggml's order within a 32-value block."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)


def _high_bits(blocks: np.ndarray, start: int) -> np.ndarray:
    """The 32 fifth bits of Q5 blocks (a little-endian uint32), bit j for value j."""
    qh = blocks[:, start : start + 4].copy().view("<u4").astype(np.uint32)
    return ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32)


def q8_0(blocks: np.ndarray) -> np.ndarray:
    return _f16(blocks, 0) * blocks[:, 2:34].view(np.int8).astype(np.float32)


def q4_0(blocks: np.ndarray) -> np.ndarray:
    return _f16(blocks, 0) * (_nibbles(blocks[:, 2:18]) - 8).astype(np.float32)


def q4_1(blocks: np.ndarray) -> np.ndarray:
    return _f16(blocks, 0) * _nibbles(blocks[:, 4:20]).astype(np.float32) + _f16(blocks, 2)


def q5_0(blocks: np.ndarray) -> np.ndarray:
    q = _nibbles(blocks[:, 6:22]) | (_high_bits(blocks, 2) << 4)
    return _f16(blocks, 0) * (q - 16).astype(np.float32)


def q5_1(blocks: np.ndarray) -> np.ndarray:
    q = _nibbles(blocks[:, 8:24]) | (_high_bits(blocks, 4) << 4)
    return _f16(blocks, 0) * q.astype(np.float32) + _f16(blocks, 2)


def _k4_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and mins packed in 12 bytes (ggml's get_scale_min_k4)."""
    s = scales.astype(np.int32)
    sc = np.empty((s.shape[0], 8), np.int32)
    mn = np.empty((s.shape[0], 8), np.int32)
    sc[:, :4], mn[:, :4] = s[:, 0:4] & 63, s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc.astype(np.float32), mn.astype(np.float32)


def q4_k(blocks: np.ndarray) -> np.ndarray:
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k4_scales(blocks[:, 4:16])
    qs = blocks[:, 16:144].reshape(-1, 4, 32)  # 4 chunks of 32 bytes: 64 values each
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)  # sub-block j = 32 values
    return (d[:, :, None] * sc[:, :, None] * q - dmin[:, :, None] * mn[:, :, None]).reshape(-1, QK_K)


def q6_k(blocks: np.ndarray) -> np.ndarray:
    ql = blocks[:, 0:128].reshape(-1, 2, 64).astype(np.int32)
    qh = blocks[:, 128:192].reshape(-1, 2, 32).astype(np.int32)
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32).reshape(-1, 2, 8)
    d = _f16(blocks, 208)
    q = np.empty((blocks.shape[0], 2, 4, 32), np.int32)
    q[:, :, 0] = (ql[:, :, :32] & 0x0F) | (((qh >> 0) & 3) << 4)
    q[:, :, 1] = (ql[:, :, 32:] & 0x0F) | (((qh >> 2) & 3) << 4)
    q[:, :, 2] = (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4)
    q[:, :, 3] = (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4)
    values = (q - 32).astype(np.float32).reshape(-1, 2, 4, 2, 16)  # 16-value groups share a scale
    scale = scales.reshape(-1, 2, 4, 2)  # value group (chunk, part, half) uses scale 2·part + half
    return (d[:, :, None, None, None] * scale[:, :, :, :, None] * values).reshape(-1, QK_K)


# GGML type name -> (elements per block, bytes per block, dequantizer).
BLOCK_TYPES: dict[str, tuple[int, int, Callable[[np.ndarray], np.ndarray]]] = {
    "Q8_0": (QK, 34, q8_0),
    "Q4_0": (QK, 18, q4_0),
    "Q4_1": (QK, 20, q4_1),
    "Q5_0": (QK, 22, q5_0),
    "Q5_1": (QK, 24, q5_1),
    "Q4_K": (QK_K, 144, q4_k),
    "Q6_K": (QK_K, 210, q6_k),
}


def dequantize(raw: np.ndarray, type_name: str, count: int) -> np.ndarray:
    """`count` float32 values from the raw uint8 bytes of a block-quantized tensor."""
    per, size, fn = BLOCK_TYPES[type_name]
    blocks = raw.reshape(-1, size)
    out = np.empty((blocks.shape[0], per), np.float32)
    step = max(1, (1 << 24) // size)  # 16 MiB of blocks at a time: bounded temporaries
    for start in range(0, blocks.shape[0], step):
        out[start : start + step] = fn(blocks[start : start + step])
    return out.reshape(-1)[:count]
