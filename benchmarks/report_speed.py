"""Report rendering time against analysis time.

Two modes, both printing ratios measured in the same run (they hold on a loaded machine even when
the absolute seconds do not):

- synthetic (default): a ~150-layer transformer-like model audited in this process; report render
  time against the analysis time (target: each report <= 20% of the analysis).
- `--model PATH`: a real model through the command line, as a user runs it: `wwaudit MODEL --json`,
  `--report x.html` and `--report x.pdf` in fresh processes, interleaved, `--repeat` times each; the
  extra wall time of a report run against the JSON-only run (issue 21's targets for the 200-entry
  YOLO-style detector, ddddocr's common_det.onnx from the test wheels: PDF <= 50%, HTML <= 25%).

    python benchmarks/report_speed.py [--layers 150] [--width 384] [--plots findings|all|none]
    python benchmarks/report_speed.py --model ~/.cache/wwaudit-test-wheels/extracted/ddddocr-1.6.1/ddddocr/common_det.onnx
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
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


def _cli_run(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (the process and its children) of one `python -m wwaudit` run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "wwaudit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 1, 3):
        raise SystemExit(f"wwaudit {' '.join(args)} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_utime + usage.ru_stime


def cli_benchmark(model: str, repeat: int, plots: str) -> int:
    """JSON-only, HTML and PDF runs of `model`, interleaved; medians and the reports' extra time."""
    runs: dict[str, list[tuple[float, float]]] = {"json": [], "html": [], "pdf": []}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {
            "json": ["--json", os.path.join(tmp, "a.json")],
            "html": ["--report", os.path.join(tmp, "a.html"), "--plots", plots],
            "pdf": ["--report", os.path.join(tmp, "a.pdf"), "--plots", plots],
        }
        for _ in range(repeat):
            for kind, extra in outputs.items():
                runs[kind].append(_cli_run([model, *extra, "--quiet"]))
    wall = {kind: statistics.median(w for w, _c in values) for kind, values in runs.items()}
    cpu = {kind: statistics.median(c for _w, c in values) for kind, values in runs.items()}
    load = os.getloadavg()[0]
    print(f"model: {model}, plots={plots}, {os.cpu_count()} CPUs, load average {load:.1f} at the end, median of {repeat}")
    for kind, target in (("json", None), ("html", 0.25), ("pdf", 0.50)):
        line = f"{kind:5s} run {wall[kind]:6.2f} s wall  {cpu[kind]:6.2f} s CPU"
        if target is not None:
            extra = wall[kind] - wall["json"]
            line += f"  report +{extra:5.2f} s = {extra / wall['json']:6.1%} of the JSON-only run (target <= {target:.0%})"
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=150)
    parser.add_argument("--width", type=int, default=768, help="hidden size (default 768, as BERT-base)")
    parser.add_argument("--plots", choices=("findings", "all", "none"), default="findings")
    parser.add_argument("--model", help="a real ONNX model, timed through the command line (see above)")
    parser.add_argument("--repeat", type=int, default=3, help="with --model: runs of each kind (default 3)")
    args = parser.parse_args(argv)
    if args.model:
        return cli_benchmark(args.model, args.repeat, args.plots)

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
