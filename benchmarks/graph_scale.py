"""Walking, planning and rendering are linear in the graph: time them on growing graphs.

    python benchmarks/graph_scale.py [--sizes 10000 100000 1000000]

Two shapes per size N: N MatMul nodes sharing one 64x64 weight (the walker's and planner's work
per node), and N tiny 1-D initializers beside one sound layer (the listing's work per tensor,
capped in the outputs). Each runs the CLI's whole path in-process (load, walk, plan, analysis,
JSON + HTML report) with --fast and one worker, and prints seconds per phase and the JSON size.
Linear means the seconds per 100k stay flat as N grows. Time it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import make_hostile  # noqa: E402


def _time_one(model_path: str, out: Path) -> dict:
    from wwaudit.cli.main import main

    t0 = time.perf_counter()
    rc = main(
        [
            model_path,
            "--json",
            str(out / "a.json"),
            "--report",
            str(out / "r.html"),
            "--quiet",
            "--fast",
            "--workers",
            "1",
            "--timeout",
            "none",
        ]
    )
    total = time.perf_counter() - t0
    doc = json.loads((out / "a.json").read_text())
    return {
        "rc": rc,
        "total_s": round(total, 2),
        "layers_listed": len(doc["layers"]),
        "json_kb": (out / "a.json").stat().st_size >> 10,
        "html_kb": (out / "r.html").stat().st_size >> 10,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        for shape, build in (
            ("nodes", make_hostile.shared_weight_many_consumers),
            ("initializers", make_hostile.many_tiny_initializers),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                path = make_hostile._save(build(n), folder / "model.onnx")
                row = {"shape": shape, "n": n, "model_mb": round(Path(path).stat().st_size / 1e6, 1), **_time_one(path, folder)}
                row["s_per_100k"] = round(row["total_s"] / n * 100_000, 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
