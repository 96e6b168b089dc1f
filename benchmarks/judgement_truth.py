"""Ground truth for the judgement benchmark: how much a damaged model's outputs moved.

No training data: each model gets fixed, seeded inputs built from its `Feed` table, the intact
model's outputs on them are the reference, and a variant's functional damage is measured as the
top-1 agreement (classifier-like outputs) and the cosine similarity of all float outputs,
flattened and concatenated. A variant that does not run, or gives NaN/Inf, is large damage.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two bundled photographs (427 x 640 RGB, uint8): real image statistics."""
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


def _photo(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random crop (40-100% of the photo's height) resampled to the input's size, in [0, 1].

    The layout is read from the shape: channels (1 or 3) first (NCHW) or last (NHWC); one channel
    is the grey mean."""
    channels_last = shape[-1] in (1, 3) and shape[1] not in (1, 3)
    h, w = (shape[1], shape[2]) if channels_last else (shape[-2], shape[-1])
    c = shape[-1] if channels_last else shape[1]
    img = _photos()[int(rng.integers(len(_photos())))].astype(np.float64) / 255.0
    ch = int(img.shape[0] * rng.uniform(0.4, 1.0))
    cw = min(img.shape[1], max(8, int(ch * w / h)))
    y0, x0 = int(rng.integers(img.shape[0] - ch + 1)), int(rng.integers(img.shape[1] - cw + 1))
    rows = y0 + (np.arange(h) * ch // h)
    cols = x0 + (np.arange(w) * cw // w)
    crop = img[rows][:, cols]
    crop = crop.mean(axis=2, keepdims=True) if c == 1 else crop
    return (crop if channels_last else crop.transpose(2, 0, 1)).reshape(shape)


@functools.lru_cache(maxsize=1)
def _sample_files() -> tuple[Path, ...]:
    """Files of many types that ship with the installed packages (sorted: deterministic)."""
    import numpy
    import sklearn

    roots = [Path(numpy.__file__).parent, Path(sklearn.__file__).parent, Path(onnx.__file__).parent]
    kinds = (".py", ".pyi", ".so", ".txt", ".csv", ".json", ".rst", ".gz", ".jpg", ".png", ".html", ".c", ".h", ".pyc", ".npz")
    files = sorted(f for r in roots for f in r.rglob("*") if f.suffix in kinds and f.is_file() and f.stat().st_size >= 64)
    return tuple(files)


def _file_bytes(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Magika's features of one real file: its first and last half-width bytes, padded with 256."""
    files = _sample_files()
    data = files[int(rng.integers(len(files)))].read_bytes()
    half = shape[-1] // 2
    beg, end = np.frombuffer(data[:half], np.uint8), np.frombuffer(data[-half:], np.uint8)
    out = np.full(shape[-1], 256, dtype=np.int64)
    out[: beg.size] = beg
    out[shape[-1] - end.size :] = end
    return out.reshape(shape)


def make_value(feed: Feed, onnx_type: int, rng: np.random.Generator) -> np.ndarray:
    """One input array as `feed` describes it, in the graph input's element type."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(onnx_type)
    if feed.kind == "photo":
        value = feed.low + (feed.high - feed.low) * _photo(feed.shape, rng)
    elif feed.kind == "filebytes":
        value = _file_bytes(feed.shape, rng)
    elif feed.kind == "image":
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
    return np.concatenate(
        [
            np.asarray(y, dtype=np.float64).ravel()
            for outs in outputs
            for y in outs
            if np.issubdtype(np.asarray(y).dtype, np.floating)
        ]
        or [np.zeros(0)]
    )


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
