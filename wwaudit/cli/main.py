"""Command line: parses arguments, calls the core, hands the result to the output formats.

Heavy libraries (numpy, onnx, weasyprint...) are imported only once a command runs, so `--help`,
`--version` and usage errors answer at once. Errors the user can act on become one line on
stderr and exit code 2; nothing here computes.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Callable, Sequence

from wwaudit import __version__
from wwaudit.cli.common import audit_options, check_counts, command_line, open_cluster, run_date, write_outputs
from wwaudit.errors import EXIT_ERROR, EXIT_OK, OutputError, UsageError, WwauditError, exit_code

if TYPE_CHECKING:
    from wwaudit import formats


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors follow the one-line contract."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # main() prefixes "wwaudit: error:"; a subcommand names itself once after it
        command = self.prog.removeprefix("wwaudit").strip()
        raise UsageError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


_EPILOG = """\
commands:
  wwaudit MODEL [options]         audit one model (also: wwaudit audit MODEL)
  wwaudit audit MODEL… --out-dir DIR
                                  audit several models or folders in one run
  wwaudit compare BASE CANDIDATE  compare two models layer by layer (own --help)
  wwaudit describe MODEL [--json] list every tensor, what an audit would analyse
  wwaudit rules [--format json]   list the rules, their rationale and thresholds

examples:
  wwaudit model.onnx --report audit.pdf
  wwaudit model.onnx --json audit.json --sarif audit.sarif --markdown summary.md
  wwaudit model.onnx --fail-on warning --baseline last-release.json
  wwaudit quantized.onnx --reference float.onnx --report quant.html
  wwaudit compare v1.onnx v2.onnx --report diff.pdf
  wwaudit audit zoo/ --out-dir audits/ --cluster tcp://scheduler:8786

exit codes: 0 audit done, no finding at or above the failure level;
1 findings at or above it; 2 unusable input, usage or I/O error;
3 inconclusive (nothing analysed, or weights skipped for a limit).
With --out-dir: the worst over the models, 2 (a model not audited) > 1 > 3 > 0.
"""


# Outputs that --format prints on stdout (each is also an option of its own taking PATH or '-').
STDOUT_FORMATS = ("json", "sarif", "junit", "markdown", "github")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """The audit's outputs: several may be written in one run."""
    out = parser.add_argument_group("outputs (several may be given in one run)")
    out.add_argument("--json", metavar="PATH", help="write the audit as JSON (schema wwaudit/1); '-' for stdout")
    out.add_argument("--csv", metavar="PATH", help="write one row per layer as CSV")
    out.add_argument("--report", metavar="PATH", help="write the audit report, .html or .pdf")
    out.add_argument("--page-size", choices=("A4", "Letter"), default="A4", help="PDF page size (default A4)")
    out.add_argument(
        "--plots",
        choices=("findings", "all", "none"),
        default="findings",
        help="per-layer ESD/MP plots in the report: layers with a finding (default), all, or none",
    )
    out.add_argument(
        "--max-plots",
        type=int,
        default=12,
        metavar="N",
        help="with --plots findings, plot at most N layers, the most severe first (default 12; 0: all)",
    )
    out.add_argument("--sarif", metavar="PATH", help="write findings as SARIF 2.1.0 (GitHub code scanning); '-' for stdout")
    out.add_argument("--junit", metavar="PATH", help="write JUnit XML, one test case per analysed layer; '-' for stdout")
    out.add_argument("--markdown", metavar="PATH", help="write a Markdown summary (pull-request comments); '-' for stdout")
    out.add_argument(
        "--github",
        metavar="PATH",
        nargs="?",
        const="-",
        help="GitHub Actions annotations (::error file=...::message), on stdout unless PATH is given",
    )
    out.add_argument(
        "--format",
        "--output-format",
        dest="stdout_format",
        choices=STDOUT_FORMATS,
        metavar="FORMAT",
        help="print one output on stdout, as ruff's --output-format: "
        + ", ".join(STDOUT_FORMATS)
        + " (--format github is --github, --format json is --json -)",
    )
    out.add_argument(
        "--attestation",
        metavar="PATH",
        help="write an in-toto Statement v1 (JSON): the model's sha256 "
        "as subject; verdict, policy hash, tool version and the JSON result's sha256 as predicate",
    )
    out.add_argument("--plots-dir", metavar="DIR", help="write each analysed layer's ESD plot into DIR")
    zoo = parser.add_argument_group("several models (wwaudit audit MODEL… --out-dir DIR)")
    zoo.add_argument(
        "--out-dir",
        metavar="DIR",
        help="audit every MODEL (files, or folders of .onnx files) in one run: DIR/NAME.json per model and "
        "DIR/summary.csv + summary.html, one row per model; exit code: the worst verdict",
    )
    zoo.add_argument("--reports", choices=("html", "pdf"), help="with --out-dir, also each model's report DIR/NAME.html|pdf")
    zoo.add_argument("--summary-pdf", action="store_true", help="with --out-dir, also DIR/summary.pdf")
    out.add_argument("--plots-format", choices=("png", "svg"), default="png", help="file format for --plots-dir (default png)")


def _add_gating_options(parser: argparse.ArgumentParser) -> None:
    """Policy, failure level, baseline, rule selection: what the verdict and exit code follow."""
    gate = parser.add_argument_group("gating")
    gate.add_argument(
        "--policy",
        metavar="PATH",
        help="policy file (default: nearest wwaudit.toml or pyproject.toml [tool.wwaudit] from the working directory up)",
    )
    gate.add_argument(
        "--fail-on",
        choices=("info", "warning", "error", "never"),
        help="lowest severity that fails the run (exit 1); overrides the policy (default error)",
    )
    gate.add_argument("--baseline", metavar="JSON", help="an earlier wwaudit JSON: only findings not in it count")
    gate.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="weights skipped for --max-evals/--max-memory do not make the verdict inconclusive (exit 3)",
    )
    gate.add_argument(
        "--select",
        metavar="RULE[,RULE]",
        action="append",
        default=[],
        help="evaluate only these rules (ids or prefixes such as WW00); overrides the policy",
    )
    gate.add_argument(
        "--ignore", metavar="RULE[,RULE]", action="append", default=[], help="do not evaluate these rules (ids or prefixes)"
    )
    gate.add_argument(
        "--report-level",
        choices=("info", "warning", "error"),
        help="lowest severity reported at all; overrides the policy (default info)",
    )
    gate.add_argument(
        "--show-policy", action="store_true", help="print the effective policy (file, then command line) as TOML and exit"
    )


def _add_metric_options(parser: argparse.ArgumentParser) -> None:
    """Opt-in metrics (README, "Optional metrics"): each adds its columns; none changes the default ones."""
    extra = parser.add_argument_group("optional metrics (off by default)")
    extra.add_argument(
        "--fix-fingers",
        choices=("xmin_peak", "clip_xmax"),
        help="finger fixing of the tail fit, as weightwatcher's fix_fingers (adds num_fingers, raw_alpha)",
    )
    extra.add_argument("--hill", action="store_true", help="alpha_hill: Hill estimator with xmin at the median eigenvalue")
    extra.add_argument("--detx", action="store_true", help="detX_num, detX_val, num_ERG_spikes, ERG_gap (SETOL)")
    extra.add_argument("--ww-extras", action="store_true", help="sv_min, max_rand_eval, ww_softrank, ww_maxdist")
    extra.add_argument("--vectors", action="store_true", help="localisation of the tail and bulk eigenvectors")
    extra.add_argument(
        "--trap-detail", action="store_true", help="each correlation trap: distance beyond the shuffled bulk, unit, localisation"
    )
    extra.add_argument(
        "--per-slice",
        action="store_true",
        help="conv layers: λmax and α of every kernel-position slice (weightwatcher's pool=False)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wwaudit",
        description="Audit the weights of an ONNX, safetensors or GGUF model without data: per-layer\n"
        "spectral diagnosis (power-law alpha, norms, rank collapse) and a report a\n"
        "reviewer can sign.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        nargs="*",
        help="path to the .onnx file (external data is read from its folder), a .safetensors file or sharded folder, "
        "or a .gguf file; several paths, or a folder of .onnx files, with --out-dir",
    )
    parser.add_argument("--version", action="version", version=f"wwaudit {__version__}")
    _add_output_options(parser)
    _add_gating_options(parser)
    ana = parser.add_argument_group("analysis")
    ana.add_argument("--layers", metavar="REGEX", help="analyse only layers whose name or tensor matches")
    ana.add_argument("--fast", action="store_true", help="reference metric set only (no traps, no distribution comparison)")
    ana.add_argument("--seed", type=int, default=0, help="seed of the shuffled copies for correlation traps (default 0)")
    ana.add_argument("--max-evals", type=int, metavar="N", help="skip layers with more than N eigenvalues (default: no limit)")
    ana.add_argument(
        "--reference",
        metavar="FLOAT.onnx",
        help="float original of a quantized model: add per-layer "
        "quantization damage (delta alpha, spectral norm, top singular values) to each layer",
    )
    perf = parser.add_argument_group("speed")
    perf.add_argument("--workers", type=int, metavar="N", help="layers analysed in parallel (default: usable CPU cores)")
    perf.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the layers on a Dask cluster: a scheduler address (tcp://host:8786), or local:N to start "
        "N worker processes here; needs pip install 'wwaudit[cluster]' (replaces --workers)",
    )
    perf.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up on an unreachable --cluster scheduler after SECONDS (default 10)",
    )
    perf.add_argument(
        "--precision",
        choices=("float64", "float32"),
        default="float64",
        help="Gram matrix precision (default float64; float32 is faster, same alpha to ~1e-7)",
    )
    # torch-cpu (torch's code path on the CPU) is accepted but not advertised: it exists to test it.
    perf.add_argument(
        "--device",
        default="cpu",
        metavar="{cpu,cuda}",
        help="where Gram matrices and eigensolves run (default cpu; cuda needs torch)",
    )
    _add_metric_options(parser)
    add_limit_options(parser)
    ui = parser.add_argument_group("display")
    ui.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary table")
    return parser


def _run_rules(argv: Sequence[str]) -> int:
    parser = _Parser(prog="wwaudit rules", description="List the audit rules with their rationale.")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default) or json: id, title, severity, scope, rationale, remedy, thresholds",
    )
    args = parser.parse_args(list(argv))
    from wwaudit.rules.findings import RULES

    if args.format == "json":
        import json

        print(json.dumps([rule.describe() for rule in RULES], indent=2, ensure_ascii=False))
        return EXIT_OK
    for rule in RULES:
        where = f"{rule.scope}{', compare' if rule.target == 'compare' else ''}{', off by default' if not rule.enabled else ''}"
        print(f"{rule.id}  [{rule.severity}]  {rule.title}  ({where})")
        print(f"    why:  {rule.rationale}")
        print(f"    do:   {rule.remedy}")
        for key, value in sorted(rule.params.items()):
            print(f"    {key} = {value:g}: {rule.param_help.get(key, '')}")
    return EXIT_OK


def _codes(values: Sequence[str]) -> list[str]:
    """--select/--ignore values: repeatable, each a comma-separated list (ruff's syntax)."""
    return [code for value in values for code in value.split(",") if code.strip()]


def _outputs(args: argparse.Namespace) -> list[tuple[str, formats.Renderer]]:
    """(path, renderer) for every output the command line asks for, in a fixed order."""
    from wwaudit import formats

    if args.stdout_format and getattr(args, args.stdout_format) is None:
        setattr(args, args.stdout_format, "-")  # as if --FORMAT - were given
    elif args.stdout_format and getattr(args, args.stdout_format) != "-":
        raise UsageError(f"--format {args.stdout_format} prints on stdout: drop --{args.stdout_format} PATH or --format")
    outputs: list[tuple[str, formats.Renderer]] = []
    if args.json:
        outputs.append((args.json, formats.FORMATS["json"]))
    if args.csv:
        outputs.append((args.csv, formats.FORMATS["csv"]))
    if args.report:
        outputs.append((args.report, formats.report_renderer(args.report)))
    for fmt in ("sarif", "junit", "markdown", "github", "attestation"):
        if getattr(args, fmt):
            outputs.append((getattr(args, fmt), formats.FORMATS[fmt]))
    return outputs


def _report_child(args: argparse.Namespace, stack: ExitStack) -> Any:
    """A render_process.RenderProcess (entered on `stack`) when the command line asks for one HTML
    or PDF report of one model and the platform can fork; else None (the report renders in this
    process, as the API does)."""
    from wwaudit import formats
    from wwaudit.formats import render_process

    if not args.report or os.path.splitext(args.report)[1].lower() not in formats.REPORT_FORMATS:
        return None
    if args.out_dir is not None or len(args.model) != 1 or not render_process.fork_available():
        return None
    import numpy  # noqa: F401 - both processes need it: imported once, before the fork, the child has it for free

    from wwaudit.formats import report

    kind = formats.module_of(formats.report_renderer(args.report)).removeprefix("report.")
    return stack.enter_context(render_process.RenderProcess(report.PREPARE[kind]))


def _folders(args: argparse.Namespace, result: Any, options: Any) -> list[tuple[str, Callable[[Any], str]]]:
    """The outputs of many files (--plots-dir), staged with the others (cli.common.write_outputs)."""
    if not args.plots_dir:
        return []

    def stage(staged: Any) -> str:
        from wwaudit.formats.report.plot_files import write_plots

        files = write_plots(result, args.plots_dir, staged, args.plots_format, workers=options.workers)
        return f"{len(files)} {args.plots_format} plots"

    return [(args.plots_dir, stage)]


def _run_audit(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    with ExitStack() as stack:
        # forked before the imports below (onnx, scipy: ~1.4 s on one core): the report's own
        # imports and preparation run beside them, on the core they leave idle
        return _audit_one(args, argv, _report_child(args, stack))


def _audit_one(args: argparse.Namespace, argv: Sequence[str], child: Any) -> int:
    """The audit of one model (or a zoo, handed to cli.zoo); `child`: a render_process.RenderProcess
    for the report, or None."""
    from wwaudit import formats
    from wwaudit.engine.core import audit
    from wwaudit.cli.progress import Heartbeat, make_progress, print_summary, print_verdict
    from wwaudit.rules.policy import load_policy, to_toml

    policy = load_policy(
        args.policy,
        fail_on=args.fail_on,
        report_level=args.report_level,
        select=_codes(args.select),
        ignore=_codes(args.ignore),
        allow_incomplete=args.allow_incomplete,
    )
    if args.show_policy:
        print(to_toml(policy), end="")
        return EXIT_OK
    from wwaudit.ingest.sources import is_model_folder

    several = len(args.model) > 1 or (bool(args.model) and _folder_of_models(args.model[0], is_model_folder))
    if args.out_dir is not None or several:
        from wwaudit.cli.zoo import run_zoo

        return run_zoo(args, argv, policy)
    if not args.model:
        raise UsageError("the following arguments are required: model (see wwaudit --help)")
    if args.reports or args.summary_pdf:
        raise UsageError("--reports and --summary-pdf need --out-dir (several models); one model: --report PATH")
    model = args.model[0]
    outputs = _outputs(args)
    formats.check_outputs(outputs)
    if args.plots_dir and os.path.exists(args.plots_dir) and not os.path.isdir(args.plots_dir):
        raise UsageError(f"--plots-dir {args.plots_dir}: not a folder")
    check_counts(args)
    if args.max_plots < 0:
        raise UsageError("--max-plots must be 0 (no limit) or a positive number")
    from wwaudit.engine import limits

    deadline = limits.Deadline(limits.parse_timeout(args.timeout))
    options = audit_options(args)
    progress = limits.GuardedProgress(make_progress(enabled=not args.quiet), deadline)
    staged = formats.StagedOutputs()
    with limits.watchdog(deadline, cleanup=staged.discard), ExitStack() as stack:
        outputs = [
            (path, child.renderer(r) if child is not None and r in formats.REPORT_FORMATS.values() else r) for path, r in outputs
        ]
        from wwaudit.rules.baseline import load_baseline

        baseline = load_baseline(args.baseline) if args.baseline else None
        executor = open_cluster(args, stack)
        result = audit(model, options, progress, executor=executor, policy=policy, baseline=baseline)
        if args.reference:
            from wwaudit.compare.engine import attach_reference

            attach_reference(result, model, args.reference, options, progress)
        deadline.check("at the end of the analysis")
        ctx = formats.RenderContext(
            command=command_line(argv),
            generated=run_date(),
            page_size=args.page_size,
            plots=args.plots,
            max_plots=args.max_plots,
            extra={"model_uri": formats.artifact_uri(model), "workers": executor.workers if executor else options.workers},
        )
        beat = None if args.quiet else (lambda label, slow: Heartbeat(label, enabled=slow))
        written = write_outputs(outputs, result, ctx, deadline, staged, heartbeat=beat, folders=_folders(args, result, options))
    if not args.quiet and not any(path == "-" for path, _ in outputs):
        print_summary(result, written)
    elif result.verdict in ("fail", "inconclusive"):
        print_verdict(result)  # a gate that stops always says why, even with --quiet
    return exit_code(result.verdict)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """--max-memory and --timeout, the same for `wwaudit` and `wwaudit compare`: both read
    untrusted files, so both keep SECURITY.md's limits."""
    lim = parser.add_argument_group("limits (untrusted or huge models; see SECURITY.md)")
    lim.add_argument(
        "--max-memory",
        metavar="SIZE",
        default="8G",
        help="skip layers whose float64 working set would exceed SIZE, per worker (default 8G)",
    )
    lim.add_argument(
        "--timeout",
        metavar="SECONDS",
        default="3600",
        help="stop with exit 2 and no output past this wall-clock time; 30m, 2h, none (default 3600)",
    )


def _compare_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wwaudit compare",
        description="Compare two models (ONNX, safetensors or GGUF, also across formats) layer by layer (base -> candidate): "
        "metric deltas, relative distance, kept singular subspaces, and the layers that got worse.",
    )
    parser.add_argument("base", help="the reference model (previous release, base of a fine-tune, float original)")
    parser.add_argument("candidate", help="the model under review")
    parser.add_argument("--json", metavar="PATH", help="write the comparison as JSON (schema wwaudit-compare/1); '-' for stdout")
    parser.add_argument("--report", metavar="PATH", help="write the comparison report, .html or .pdf")
    parser.add_argument("--page-size", choices=("A4", "Letter"), default="A4", help="PDF page size (default A4)")
    parser.add_argument("--sarif", metavar="PATH", help="write the comparison's findings as SARIF 2.1.0; '-' for stdout")
    parser.add_argument("--junit", metavar="PATH", help="write JUnit XML, one test case per candidate layer; '-' for stdout")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown summary; '-' for stdout")
    parser.add_argument(
        "--policy",
        metavar="PATH",
        help="policy file (CMP rules' severities and thresholds; "
        "default: the nearest wwaudit.toml or pyproject.toml [tool.wwaudit])",
    )
    parser.add_argument(
        "--fail-on",
        choices=("info", "warning", "error", "never"),
        help="lowest severity that fails the run (exit 1); overrides the policy (default error)",
    )
    parser.add_argument("--layers", metavar="REGEX", help="compare only layers whose name or tensor matches")
    parser.add_argument("--fast", action="store_true", help="reference metric set only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled copies (default 0)")
    parser.add_argument("--max-evals", type=int, metavar="N", help="skip layers with more than N eigenvalues")
    parser.add_argument("--workers", type=int, metavar="N", help="layers analysed in parallel (default: usable CPU cores)")
    add_limit_options(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    return parser


def _run_compare(argv: Sequence[str]) -> int:
    args = _compare_parser().parse_args(list(argv))
    from wwaudit.cli.compare import run

    return run(args, ["compare", *argv])


def _run_describe(argv: Sequence[str]) -> int:
    parser = _Parser(
        prog="wwaudit describe",
        description="List every tensor of a model (name, op, shape, dtype, bytes) and what an audit would analyse, "
        "or why not, from the header alone: no weight is read and no spectrum computed.",
    )
    parser.add_argument("model", help="an ONNX, safetensors (file or sharded folder) or GGUF model")
    parser.add_argument(
        "--json", metavar="PATH", nargs="?", const="-", help="write JSON (schema wwaudit-describe/1); '-' or no PATH: stdout"
    )
    args = parser.parse_args(list(argv))
    from wwaudit.engine.describe import describe
    from wwaudit.formats import describe_format

    inventory = describe(args.model).to_dict()
    if args.json is None:
        sys.stdout.write(describe_format.render_text(inventory))
    elif args.json == "-":
        sys.stdout.buffer.write(describe_format.render_json(inventory))
    else:
        try:
            with open(args.json, "wb") as fh:
                fh.write(describe_format.render_json(inventory))
        except OSError as exc:
            raise OutputError(f"{args.json}: cannot be written: {exc.strerror}") from None
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `wwaudit` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "rules":
            return _run_rules(argv[1:])
        if argv and argv[0] == "compare":
            return _run_compare(argv[1:])
        if argv and argv[0] == "describe":
            return _run_describe(argv[1:])
        if argv and argv[0] == "audit":
            argv = argv[1:]
        return _run_audit(argv)
    except WwauditError as exc:
        print(f"wwaudit: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("wwaudit: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(
            "wwaudit: error: out of memory while auditing (lower --max-memory, or use --max-evals or --layers)", file=sys.stderr
        )
        return EXIT_ERROR
    except Exception as exc:  # last resort: never a traceback for a user, but say it is our bug
        if os.environ.get("WWAUDIT_DEBUG"):
            raise
        print(
            f"wwaudit: internal error: {type(exc).__name__}: {_one_line(str(exc))} (set WWAUDIT_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


# C0/C1 control characters and bidirectional overrides: names and paths in messages come from
# the model file, and must not move the cursor, recolour or reorder the user's terminal.
_UNPRINTABLE = dict.fromkeys([*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)], "?")


def _folder_of_models(path: str, is_model_folder: Callable[[str], bool]) -> bool:
    """A folder to audit model by model: not one sharded model, and not named like a model file
    (a folder called `x.onnx` is a wrong path to one model, answered as such, not a zoo of none)."""
    named_like_model = os.path.splitext(path)[1].lower() in (".onnx", ".gguf", ".safetensors")
    return os.path.isdir(path) and not named_like_model and not is_model_folder(path)


def _one_line(text: str) -> str:
    return " ".join(text.split()).translate(_UNPRINTABLE)[:1000]
