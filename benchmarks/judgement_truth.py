"""Ground truth for the judgement benchmark: how much a damaged model's outputs moved.

No training data: each model gets fixed, seeded inputs built from its `Feed` table, the intact
model's outputs on them are the reference, and a variant's functional damage is measured as the
top-1 agreement (classifier-like outputs) and the cosine similarity of all float outputs,
flattened and concatenated. A variant that does not run, or gives NaN/Inf, is large damage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from judgement_damage import stable_seed
from judgement_models import Feed, ModelSpec

TOP1_MIN = 0.90
COSINE_MIN = 0.95


def _smooth(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Uniform [0, 1] noise on a grid 8x coarser along every axis of 16 or more, blown up."""
    coarse = tuple(-(-d // 8) if d >= 16 else d for d in shape)
    field = rng.uniform(0, 1, coarse)
    for axis, (d, c) in enumerate(zip(shape, coarse)):
        if c != d:
            field = np.repeat(field, 8, axis=axis).take(np.arange(d), axis=axis)
    return 0.8 * field + 0.2 * rng.uniform(0, 1, shape)


def _audio(shape: tuple[int, ...], amp: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(shape[-1]) / 16000.0
    tone = sum(np.sin(2 * np.pi * rng.uniform(100, 3000) * t + rng.uniform(0, 6.3)) for _ in range(3))
    return amp * (0.3 * tone + 0.3 * rng.standard_normal(shape))


def make_value(feed: Feed, onnx_type: int, rng: np.random.Generator) -> np.ndarray:
    """One input array as `feed` describes it, in the graph input's element type."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(onnx_type)
    if feed.kind == "image":
        value = feed.low + (feed.high - feed.low) * _smooth(feed.shape, rng)
    elif feed.kind == "audio":
        value = _audio(feed.shape, feed.high, rng)
    elif feed.kind == "ids":
        value = rng.integers(int(feed.low), int(feed.high), feed.shape)
    elif feed.kind == "normal":
        value = feed.high * rng.standard_normal(feed.shape)
    elif feed.kind in ("ones", "true"):
        value = np.ones(feed.shape)
    elif feed.kind == "const":
        value = np.full(feed.shape, feed.low)
    else:
        value = np.zeros(feed.shape)
    return np.asarray(value).astype(dtype)


def make_inputs(spec: ModelSpec, model_path: Path, seed: int) -> list[dict[str, np.ndarray]]:
    """`spec.n_inputs` seeded feed dicts for the model's graph inputs (initializers excluded)."""
    proto = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    types = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input if i.name not in inits}
    missing = set(types) - set(spec.feeds)
    if missing:
        raise ValueError(f"{spec.model_id}: no feed for inputs {sorted(missing)}")
    rng = np.random.default_rng(stable_seed("inputs", spec.model_id, seed))
    return [{name: make_value(spec.feeds[name], types[name], rng) for name in types} for _ in range(spec.n_inputs)]


def run_model(model_path: Path, inputs: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """The outputs of every input, one onnxruntime session on one thread (no graph rewrites that
    could fold the damage away differently from one variant to the next)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in inputs]


def _labels(outputs: list[list[np.ndarray]], mode: str, index: int) -> np.ndarray:
    parts = []
    for outs in outputs:
        y = np.asarray(outs[index])
        if mode == "argmax":
            parts.append(y.argmax(axis=-1).ravel())
        elif mode == "binary":
            parts.append((y.astype(np.float64) > 0.5).ravel())
        else:
            parts.append(y.ravel())
    return np.concatenate(parts)


def _floats(outputs: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.asarray(y, dtype=np.float64).ravel() for outs in outputs for y in outs
                           if np.issubdtype(np.asarray(y).dtype, np.floating)] or [np.zeros(0)])


def compare(spec: ModelSpec, ref: list[list[np.ndarray]], got: list[list[np.ndarray]], names: list[str]) -> dict:
    """top-1 agreement, cosine and relative L2 error of `got` against the intact `ref`."""
    result: dict = {"ran": True, "top1": None, "cosine": None, "rel_l2": None}
    a, b = _floats(ref), _floats(got)
    if b.size and not np.all(np.isfinite(b)):
        result.update(ran=True, nonfinite=True, large_damage=True)
        return result
    if a.size and a.shape == b.shape:
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        result["cosine"] = float(a @ b / denom) if denom > 0 else (1.0 if np.array_equal(a, b) else 0.0)
        result["rel_l2"] = float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30))
    if spec.top1:
        index = names.index(spec.top1_output) if spec.top1_output else 0
        la, lb = _labels(ref, spec.top1, index), _labels(got, spec.top1, index)
        result["top1"] = float(np.mean(la == lb)) if la.shape == lb.shape else 0.0
    result["large_damage"] = is_large(result)
    return result


def is_large(metrics: dict) -> bool:
    """The issue's threshold: top-1 agreement < 0.90 or cosine < 0.95, or the model broke."""
    if not metrics.get("ran", True) or metrics.get("nonfinite"):
        return True
    top1, cosine = metrics.get("top1"), metrics.get("cosine")
    return (top1 is not None and top1 < TOP1_MIN) or (cosine is not None and cosine < COSINE_MIN)


def output_names(model_path: Path) -> list[str]:
    return [o.name for o in onnx.load(str(model_path), load_external_data=False).graph.output]
