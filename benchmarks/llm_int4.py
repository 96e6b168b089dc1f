"""A Llama-2-7B-shaped int4 decoder in onnxruntime-genai's layout: wall time against the floor of
the same eigen work, and peak memory, with --workers 2 (issue 19). Run by hand on an idle machine:

    python benchmarks/llm_int4.py                       # 32 layers, 4096/11008, vocab 32000 (~4.6 GB on disk)
    python benchmarks/llm_int4.py --layers 2            # the same shapes, fewer layers (minutes)
    python benchmarks/llm_int4.py --dir /big/disk --keep

The model is written by tests/genai_layout.py (MatMulNBits int4, block 32, packed qkv_proj
under GroupQueryAttention with 32 heads, float32 embedding table, untied lm_head, one external
data file), with uniform random 4-bit codes ("codes": generating Gaussian weights for 6.7 B
parameters would take longer than the audit). The eigen work does not depend on the values.

Measured, each in its own child process (bench_audit.run_child):
- wwaudit --fast --workers W end to end: wall seconds, peak PSS summed over the process tree
  (workers included, shared pages once) and the largest single process's peak RSS;
- the floor: the same matrices (dequantized by wwaudit, untimed), float64 Gram in row chunks +
  numpy eigvalsh, timed only, split largest-first over W processes with one BLAS thread each
  (the makespan of pure eigen work, as wwaudit's workers run).
Targets: peak memory <= 1.5 GB, wall <= 1.3 x floor.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

from bench_audit import _eig_seconds, run_child  # noqa: E402  (sibling script)
from genai_layout import DecoderConfig, write_decoder  # noqa: E402  (the tests' generator)

LLAMA_7B = dict(hidden=4096, intermediate=11008, vocab=32000, heads=32, kv_heads=32, block_size=32, weights="codes")


def _bytes_on_disk(cfg: DecoderConfig) -> int:
    """int4 codes + float32 scales of every projection, the float32 embedding, rotary caches."""
    per_layer = cfg.hidden * cfg.hidden * 4 + 3 * cfg.hidden * cfg.intermediate
    params = cfg.layers * per_layer + cfg.vocab * cfg.hidden
    return int(params * (0.5 + 4 / cfg.block_size) + cfg.vocab * cfg.hidden * 4)


def _specs(model: Path) -> list:
    from wwaudit.ingest.loader import load_model
    from wwaudit.ingest.plan import plan_layers
    from wwaudit.ingest.walker import walk

    loaded = load_model(str(model))
    return [s for s in plan_layers(walk(loaded.proto, loaded.base_dir)) if s.view is not None]


def _floor_worker(args: tuple[str, list[int]]) -> float:
    from threadpoolctl import threadpool_limits

    model, indices = args
    specs = _specs(Path(model))
    total = 0.0
    with threadpool_limits(1):
        for i in indices:
            for matrix in specs[i].matrices(widen=False):  # dequantization: untimed
                total += _eig_seconds(np.asarray(matrix))
    return total


def child_floor(model: Path, workers: int) -> dict:
    """Makespan of the eigen work split largest-first over `workers` one-thread processes."""
    import multiprocessing

    specs = _specs(model)
    cost = []
    for i, spec in enumerate(specs):
        rows, cols, slices = spec.shape_info()
        n, m = max(rows, cols), min(rows, cols)
        cost.append((slices * (n * m * m + m**3), i))
    bins: list[list[int]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for c, i in sorted(cost, reverse=True):
        k = loads.index(min(loads))
        bins[k].append(i)
        loads[k] += c
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        per_worker = pool.map(_floor_worker, [(str(model), b) for b in bins])
    return {"parallel_s": max(per_worker), "busy_s": sum(per_worker), "matrices": len(specs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where to write the model (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the model after the run")
    ap.add_argument("--child-floor", nargs=2, metavar=("MODEL", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_floor:
        print(json.dumps(child_floor(Path(args.child_floor[0]), int(args.child_floor[1]))))
        return
    cfg = DecoderConfig(layers=args.layers, **LLAMA_7B)
    folder = Path(tempfile.mkdtemp(prefix="wwaudit-llm-", dir=args.dir))
    need = _bytes_on_disk(cfg)
    free = shutil.disk_usage(folder).free
    if free < need * 1.1:
        sys.exit(f"llm_int4: {need / 1e9:.1f} GB needed in {folder}, {free / 1e9:.1f} GB free (use --dir)")
    try:
        t0 = time.perf_counter()
        model = write_decoder(folder, cfg)
        written = time.perf_counter() - t0
        size = (folder / "model.onnx.data").stat().st_size
        print(f"model: {args.layers} layers, {size / 1e9:.2f} GB external data, written in {written:.0f} s", flush=True)
        out = folder / "audit.json"
        cmd = [sys.executable, "-m", "wwaudit", str(model), "--fast", "--quiet", "--workers", str(args.workers)]
        audit = run_child(cmd + ["--json", str(out), "--fail-on", "never", "--timeout", "none"])
        doc = json.loads(out.read_text())
        analysed = sum(layer["status"] == "ok" for layer in doc["layers"])
        peak = max(audit["tree_peak_mb"], audit["proc_peak_mb"])
        print(f"wwaudit --fast --workers {args.workers}: {audit['wall']:.1f} s, {analysed} layers analysed", flush=True)
        print(
            f"peak memory: {audit['tree_peak_mb']:.0f} MB PSS over the tree, {audit['proc_peak_mb']:.0f} MB largest process RSS (target <= 1536)",
            flush=True,
        )
        floor = run_child([sys.executable, str(Path(__file__).resolve()), "--child-floor", str(model), str(args.workers)])
        ratio = audit["wall"] / floor["parallel_s"]
        print(f"floor (Gram + eigvalsh, {floor['matrices']} matrices, {args.workers} x 1 thread): {floor['parallel_s']:.1f} s")
        print(f"wall / floor: {ratio:.2f} (target <= 1.3)")
        print(
            f"peak memory: {audit['tree_peak_mb']:.0f} MB PSS over the tree, {audit['proc_peak_mb']:.0f} MB largest process RSS (target <= 1536)"
        )
        summary = {
            "layers": args.layers,
            "data_gb": size / 1e9,
            "wall_s": audit["wall"],
            "floor_s": floor["parallel_s"],
            "ratio": ratio,
            "tree_pss_mb": audit["tree_peak_mb"],
            "proc_rss_mb": audit["proc_peak_mb"],
            "analysed": analysed,
            "meets_targets": ratio <= 1.3 and peak <= 1536,
        }
        print(json.dumps(summary))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
