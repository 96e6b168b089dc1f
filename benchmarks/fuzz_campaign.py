"""The long fuzzing campaign, run by hand: the structure-aware generators of tests/fuzz_models.py
through the whole CLI, each case in a forked child so a hang, a crash or a memory blow-up is
caught and measured instead of ending the campaign.

    python benchmarks/fuzz_campaign.py --cases 10000 [--start 0] [--scale 2] [--out fuzz.json]

Per case the child writes the model into a fresh sandbox, records every file it opens (on the
descriptor, as tests/test_hostile.py does), runs `wwaudit` with --max-memory 256M and --timeout
30, and reports its exit code and stderr. The parent enforces a hard wall-clock limit (timeout +
grace + margin) and reads the child's peak RSS from wait4. A case is a finding when
fuzz_models.check_outcome objects, when the run overruns --timeout, or when its peak RSS exceeds
--max-memory + 500 MB (one worker). The summary (cases, outcomes, time, findings with their
seeds) goes to stdout and, with --out, to a JSON file; rerun one seed with --start N --cases 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import fuzz_models  # noqa: E402
from test_hostile import recording_opens  # noqa: E402

MAX_MEMORY = 256 << 20
TIMEOUT_S = 30
RSS_SLACK = 500 << 20


def _child(seed: int, folder: Path, scale: int, report: Path) -> None:
    """Build and audit one case; write (rc, stderr, escaped opens) to `report`; never return."""
    import io

    from wwaudit.cli.main import main

    rc, err, escaped = 2, "", []
    try:
        case, outside = fuzz_models.prepare_sandbox(folder)
        model, families, args = fuzz_models.make_case(seed, case, scale)
        out = folder / "out"
        out.mkdir()
        sys.stderr = buffer = io.StringIO()
        with recording_opens() as opened:
            rc = main(
                [
                    model,
                    "--json",
                    str(out / "a.json"),
                    "--csv",
                    str(out / "a.csv"),
                    "--quiet",
                    "--fast",
                    "--workers",
                    "1",
                    "--max-memory",
                    str(MAX_MEMORY),
                    "--timeout",
                    str(TIMEOUT_S),
                    *args,
                ]
            )
        err = buffer.getvalue()
        escaped = [p for p in opened if p.startswith(str(outside.resolve()))]
        left = sorted(os.listdir(out))
        report.write_text(
            json.dumps(
                {
                    "rc": rc,
                    "stderr": err,
                    "escaped": escaped,
                    "families": families,
                    "outputs": left if rc == 2 else [n for n in left if n.startswith(".wwaudit-")],
                }
            )
        )
    except BaseException as exc:  # the generator itself failed: a bug of the campaign, reported as such
        report.write_text(
            json.dumps(
                {
                    "rc": -1,
                    "stderr": f"generator: {type(exc).__name__}: {exc}"[:500],
                    "escaped": [],
                    "families": [],
                    "outputs": [],
                }
            )
        )
    finally:
        os._exit(0)


def run_case(seed: int, scale: int, work: Path) -> dict:
    """One case in a forked child: outcome, wall time, peak RSS, and the finding if any."""
    folder = work / f"case{seed}"
    report = work / f"report{seed}.json"
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        _child(seed, folder, scale, report)
    limit = TIMEOUT_S + 60 + 30
    status, usage = 0, None
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > limit:
            os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.01)
    wall = time.monotonic() - t0
    rss = usage.ru_maxrss * 1024 if usage is not None else 0
    result = (
        json.loads(report.read_text())
        if report.exists()
        else {"rc": None, "stderr": "", "escaped": [], "families": [], "outputs": []}
    )
    problem = None
    if result["rc"] is None:
        problem = f"no result: killed after {wall:.0f} s (hang) or died (status {status})"
    elif result["rc"] == -1:
        problem = result["stderr"]
    else:
        problem = fuzz_models.check_outcome(result["rc"], result["stderr"], result["outputs"], result["escaped"])
        if problem is None and wall > TIMEOUT_S + 65:
            problem = f"ran {wall:.0f} s, past --timeout {TIMEOUT_S}"
        if problem is None and rss > MAX_MEMORY + RSS_SLACK:
            problem = f"peak RSS {rss >> 20} MiB above --max-memory + 500 MB"
    shutil.rmtree(folder, ignore_errors=True)
    report.unlink(missing_ok=True)
    return {
        "seed": seed,
        "rc": result["rc"],
        "families": result["families"],
        "wall_s": round(wall, 3),
        "rss_mib": rss >> 20,
        "problem": problem,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--scale", type=int, default=2, help="size scale of the generators (CI uses 1)")
    parser.add_argument("--out", help="write the summary and every finding as JSON")
    args = parser.parse_args(argv)
    import wwaudit.cli.main  # noqa: F401  (loaded once in the parent: children fork with it)
    import wwaudit.engine.core  # noqa: F401

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))  # finish the case, write the summary
    t0 = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="wwaudit-fuzz-") as tmp:
        for seed in range(args.start, args.start + args.cases):
            if stop:
                break
            results.append(run_case(seed, args.scale, Path(tmp)))
            if len(results) % 500 == 0:
                print(
                    f"{len(results)} cases, {time.monotonic() - t0:.0f} s, {sum(1 for r in results if r['problem'])} findings",
                    file=sys.stderr,
                )
                if args.out:  # partial figures survive an interrupted campaign
                    Path(args.out).write_text(json.dumps(_summary(results, time.monotonic() - t0, args), indent=1))
    summary = _summary(results, time.monotonic() - t0, args)
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 1 if summary["findings"] else 0


def _summary(results: list[dict], seconds: float, args: argparse.Namespace) -> dict:
    rcs: dict[str, int] = {}
    for r in results:
        rcs[str(r["rc"])] = rcs.get(str(r["rc"]), 0) + 1
    walls = sorted(r["wall_s"] for r in results)
    return {
        "cases": len(results),
        "first_seed": args.start,
        "scale": args.scale,
        "seconds": round(seconds, 1),
        "exit_codes": rcs,
        "median_case_s": walls[len(walls) // 2] if walls else None,
        "slowest_case_s": walls[-1] if walls else None,
        "peak_rss_mib": max((r["rss_mib"] for r in results), default=0),
        "findings": len([r for r in results if r["problem"]]),
        "problems": [r for r in results if r["problem"]][:50],
        "results": results,
    }


if __name__ == "__main__":
    sys.exit(main())
