"""Purpose-built ONNX models for the gating tests: each weight is made to trigger one rule (or none).

The "clean" weight has a prescribed power-law spectrum (eigenvalues at the quantiles of a Pareto
law with exponent `alpha`, random orthogonal singular vectors): its tail fit lands near `alpha`
with a small KS distance, full rank and no correlation traps, so no rule fires on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def power_law_matrix(n: int, m: int, alpha: float, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """n×m float32 matrix whose ESD follows ρ(λ) ∝ λ^(−alpha)."""
    rng = np.random.default_rng(seed)
    u = (np.arange(m) + 0.5) / m
    lam = (1.0 - u) ** (-1.0 / (alpha - 1.0))
    U, _ = np.linalg.qr(rng.standard_normal((n, m)))
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return (scale * (U * np.sqrt(lam)) @ V.T).astype(np.float32)


def trigger_weights() -> dict[str, np.ndarray]:
    """One [in, out] MatMul weight per condition; names say what each should trigger."""
    rng = np.random.default_rng(7)
    nan = power_law_matrix(128, 64, 3.0, seed=1)
    nan[5, 3] = np.nan
    inf = power_law_matrix(128, 64, 3.0, seed=2)
    inf[0, 0] = np.inf
    return {
        "clean": power_law_matrix(128, 64, 3.0, seed=0),
        "nan_w": nan,
        "inf_w": inf,
        "zero_w": np.zeros((128, 64), np.float32),
        "const_w": np.full((128, 64), 0.05, np.float32),
        "thin_product": (rng.standard_normal((128, 4)) @ rng.standard_normal((4, 64))).astype(np.float32),
        # a Gaussian matrix is the random-like phase; its tail fit is too unstable to test alpha on,
        # so under-training (alpha > 6) is tested on a spectrum built with a steep tail
        "random_w": rng.standard_normal((256, 128)).astype(np.float32),
        "steep_tail_w": power_law_matrix(128, 64, 9.0, seed=4),
        "overfit_w": power_law_matrix(128, 64, 1.6, seed=3),
        "trapped_w": rng.standard_t(1.2, (128, 64)).astype(np.float32),
    }


def clean_weights(count: int = 6) -> dict[str, np.ndarray]:
    """Healthy layers with slightly different exponents (so their spectral norms differ a little)."""
    return {f"dense{i}": power_law_matrix(128, 64, 3.0 + 0.1 * i, seed=i) for i in range(count)}


def save_model(path: Path, weights: dict[str, np.ndarray]) -> Path:
    """One MatMul per weight (x[1, in] @ W[in, out]); the node is named after the weight."""
    nodes, inputs, outputs, inits = [], [], [], []
    for name, w in weights.items():
        # ONNX MatMul weights are [in, out]; wwaudit transposes them back to (out × in).
        w = np.ascontiguousarray(w.T)
        inputs.append(helper.make_tensor_value_info(f"x_{name}", TensorProto.FLOAT, [1, w.shape[0]]))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [1, w.shape[1]]))
        nodes.append(helper.make_node("MatMul", [f"x_{name}", name], [f"y_{name}"], name=name))
        inits.append(numpy_helper.from_array(w, name))
    graph = helper.make_graph(nodes, "gating", inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path
