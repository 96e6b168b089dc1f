"""Report rendering time against analysis time, on a synthetic ~150-layer model.

The report must not dominate an audit: the target is report time <= 20% of analysis time for a
150-layer model. Both are measured in the same run, so the printed ratio holds on a loaded machine
even when the absolute seconds do not.

    python benchmarks/report_speed.py [--layers 150] [--width 384] [--plots findings|all|none]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_model(path: str, layers: int, width: int, seed: int = 0) -> None:
    """A transformer-like stack (per block: q, k, v, o of width × width, then width × 4·width and
    4·width × width), BERT-base sized by default; weights are noise plus a few strong directions
    (heavy-tailed spectra), so fits, findings and plots behave as on a trained model."""
    rng = np.random.default_rng(seed)
    shapes = [(width, width)] * 4 + [(width, 4 * width), (4 * width, width)]
    nodes, inits = [], []
    for i in range(layers):
        n, m = shapes[i % len(shapes)]
        w = rng.standard_normal((n, m)).astype(np.float32) / np.float32(np.sqrt(n))
        rank = 1 + i % 8
        u, v = rng.standard_normal((n, rank)), rng.standard_normal((rank, m))
        w += ((u @ v) * (0.5 + (i % 5)) * 4 / np.sqrt(n * m)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        # each layer reads the block input (a fan-out), which keeps every weight a MatMul operand
        nodes.append(
            helper.make_node(
                "MatMul",
                ["x" if n == width else "x4", f"w{i}"],
                [f"h{i}"],
                name=f"block{i // 6}.{['q', 'k', 'v', 'o', 'fc1', 'fc2'][i % 6]}",
            )
        )
    outputs = [helper.make_tensor_value_info(f"h{i}", TensorProto.FLOAT, None) for i in range(layers)]
    graph = helper.make_graph(
        nodes,
        "bench",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width]),
            helper.make_tensor_value_info("x4", TensorProto.FLOAT, [1, 4 * width]),
        ],
        outputs,
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=150)
    parser.add_argument("--width", type=int, default=768, help="hidden size (default 768, as BERT-base)")
    parser.add_argument("--plots", choices=("findings", "all", "none"), default="findings")
    args = parser.parse_args(argv)

    from wwaudit.engine.core import audit
    from wwaudit.formats import RenderContext
    from wwaudit.formats.report import html as html_format
    from wwaudit.formats.report import pdf as pdf_format

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "bench.onnx")
        build_model(model, args.layers, args.width)
        t0 = time.perf_counter()
        result = audit(model)
        analysis = time.perf_counter() - t0
    with_findings = len({f.layer_id for f in result.findings if f.layer_id is not None})
    ctx = RenderContext(command="benchmark", generated="benchmark", plots=args.plots)
    t0 = time.perf_counter()
    html = html_format.render(result, ctx)
    t_html = time.perf_counter() - t0
    t0 = time.perf_counter()
    pdf = pdf_format.render(result, ctx)
    t_pdf = time.perf_counter() - t0
    print(f"model: {len(result.layers)} layers, {with_findings} with a finding, plots={args.plots}, {os.cpu_count()} CPUs")
    print(f"analysis      {analysis:8.2f} s")
    print(f"HTML report   {t_html:8.2f} s  ({t_html / analysis:6.1%} of analysis, {len(html) / 2**20:.1f} MiB)")
    print(f"PDF report    {t_pdf:8.2f} s  ({t_pdf / analysis:6.1%} of analysis, {len(pdf) / 2**20:.1f} MiB)")
    print("target: each report <= 20% of analysis time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
