"""Small MatMul chains with heavy-tailed weights, the models the cluster and zoo tests run on.

One generator for both, so a zoo run and a cluster run audit the same kind of model: each seed
gives other weights, `external` stores every tensor in one external-data file (`w.bin`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def matmul_chain(path: Path, seed: int, shapes: list[tuple[int, int]], external: bool = False) -> Path:
    """Write a MatMul chain of the given (in, out) shapes to `path` and return the path."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (n_in, n_out) in enumerate(shapes):
        z = rng.standard_normal((n_in, n_out)) * (1 + rng.pareto(3.0, (n_in, 1))) / np.sqrt(n_in)
        inits.append(numpy_helper.from_array(z.astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"fc{i}"))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, shapes[0][0]])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, shapes[-1][1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    else:
        onnx.save(model, path)
    return path
