"""Judgement benchmark: does wwaudit's verdict tell intact real models from damaged ones?

Run by hand (not in CI), from the repository root:

    python benchmarks/judgement.py --jobs 2                # everything (cached after the first run)
    python benchmarks/judgement.py --reaudit --jobs 2      # after a rule change: new audits, same damage
    python benchmarks/judgement.py --score-only            # tables from the cached audits
    python benchmarks/judgement.py --models magika,nudenet --variants intact,s0_noise50 --split holdout

Real pretrained ONNX models come from pinned PyPI wheels (judgement_models.py). Each float model
is damaged in 3 layers spread over its depth, one damage at a time (judgement_damage.py), and a
few times as a whole; onnxruntime on fixed seeded inputs measures how far the outputs moved
(judgement_truth.py); wwaudit audits every variant through its command line only (its JSON
output, README "JSON contract"), so the benchmark survives any reorganisation of the package.
Layout of benchmarks/.judgement/ and how to read the results: benchmarks/JUDGEMENT.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import judgement_damage as dmg  # noqa: E402
import judgement_report as report  # noqa: E402
import judgement_truth as truth  # noqa: E402
from judgement_models import BY_ID, MODELS, Feed, ModelSpec  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / ".judgement"
WHEELS = Path.home() / ".cache" / "wwaudit-test-wheels"  # shared with tests/test_real_models.py
SEED = 0
SITE_DEPTHS = (0.25, 0.50, 0.75)
OWN = ModelSpec(
    "digits_mlp",
    "(own)",
    "-",
    "digits_mlp_normal.onnx",
    "own MLP (over-training)",
    "tune",
    {"x": Feed((1, 64), "digits")},
    n_inputs=64,
    top1="argmax",
    note="trained here on sklearn digits",
)
PROBES = {  # fail-closed probes: an audit that analysed nothing or skipped weights for a limit
    "probe_no_layers": ["--layers", "^no-such-layer-xyz$"],
    "probe_max_evals5": ["--max-evals", "5"],
}


@dataclass
class Case:
    """One audited file: an intact model, a damaged variant, or a fail-closed probe."""

    model: str
    variant: str
    damage: str
    level: str
    scope: str  # intact | layer | model | probe
    site: int | None = None
    tensors: list[str] = field(default_factory=list)
    layer_ids: list[int] = field(default_factory=list)
    layer_names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    depth: float | None = None
    other: str | None = None  # copy_rows: the layer the rows come from


# ---- files -------------------------------------------------------------------------------------
def audit_path(model: str, variant: str) -> Path:
    return DATA / "audits" / model / f"{variant}.json"


def damaged_path(model: str, variant: str) -> Path:
    return DATA / "damaged" / model / f"{variant}.onnx"


def truth_path(model: str, variant: str) -> Path:
    return DATA / "truth" / model / f"{variant}.seed{SEED}.json"


def _write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fetch(spec: ModelSpec) -> Path:
    """The model's .onnx file (and external data) extracted from its pinned wheel, cached."""
    if spec.model_id == OWN.model_id:
        from judgement_overfit import build

        return build(DATA / "own")["normal"]
    base = WHEELS / "extracted" / f"{spec.dist}-{spec.version}"
    target = base / spec.member
    if all((base / m).exists() for m in (spec.member, *spec.extra_members)):
        return target
    with zipfile.ZipFile(_wheel(spec.dist, spec.version)) as wheel:
        for member in (spec.member, *spec.extra_members):
            out = base / member
            out.parent.mkdir(parents=True, exist_ok=True)
            part = out.with_name(out.name + ".part")
            part.write_bytes(wheel.read(member))
            part.replace(out)
    return target


def _wheel(dist: str, version: str) -> Path:
    stem = dist.replace("-", "_")
    found = sorted(WHEELS.glob(f"{stem}-{version}-*.whl"))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "--disable-pip-version-check",
                "-d",
                str(WHEELS),
                f"{dist}=={version}",
            ],
            check=True,
            timeout=600,
        )
        found = sorted(WHEELS.glob(f"{stem}-{version}-*.whl"))
    return found[0]


# ---- auditing ----------------------------------------------------------------------------------
def run_audit(model_file: Path, out: Path, extra: list[str], reaudit: bool) -> dict:
    """wwaudit's JSON for one file, through the CLI; a dict with `_error` when it failed."""
    cached = _read_json(out)
    if cached is not None and not reaudit and "_error" not in cached:
        return cached
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.json")
    tmp.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "wwaudit", str(model_file), "--json", str(tmp), "--quiet", "--workers", "1", *extra]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
        rc, err = proc.returncode, proc.stderr.strip()[-400:]
    except subprocess.TimeoutExpired:
        rc, err = -1, "timed out after 1800 s"
    doc = _read_json(tmp) if rc in (0, 1, 3) else None  # 3: inconclusive, a verdict with its JSON
    if doc is None:
        doc = {"_error": err or f"exit {rc}, no JSON"}
    doc["_exit"], doc["_seconds"] = rc, round(time.monotonic() - started, 2)
    _write_json(out, doc)
    tmp.unlink(missing_ok=True)
    return doc


# ---- damage sites ------------------------------------------------------------------------------
def eligible_sites(doc: dict, proto: onnx.ModelProto) -> list[dmg.Site]:
    """Layers that are a whole float tensor used by one analysed layer, with a known matrix layout."""
    analysed = [layer for layer in doc["layers"] if layer["status"] != "skipped"]
    uses: dict[str, int] = {}
    for layer in analysed:
        uses[layer["tensor"]] = uses.get(layer["tensor"], 0) + 1
    sites = []
    for index, layer in enumerate(analysed):
        shape = tuple(layer.get("shape") or ())
        whole = shape and layer["N"] * layer["M"] * layer["slices"] == int(np.prod(shape))
        if layer["status"] != "ok" or layer["dtype"] not in ("float", "float16") or layer.get("quantization"):
            continue
        if not whole or uses[layer["tensor"]] != 1:
            continue
        stored = dmg.stored_tensors(proto, layer["tensor"])
        if len(stored) != 1 or stored[0].data_type not in dmg.FLOAT_TYPES or tuple(stored[0].dims) != shape:
            continue
        layout = dmg.layout_of(proto, layer["tensor"], len(shape))
        if layout is None:
            continue
        depth = index / max(len(analysed) - 1, 1)
        sites.append(dmg.Site(layer["tensor"], layer["id"], layer["name"], layer["kind"], layer["op"], shape, layout, depth))
    return sites


def choose_sites(sites: list[dmg.Site]) -> list[dmg.Site]:
    """One site nearest each of SITE_DEPTHS (25/50/75% of the analysed layers), no repeats."""
    chosen: list[dmg.Site] = []
    for target in SITE_DEPTHS:
        free = [s for s in sites if s not in chosen]
        if free:
            chosen.append(min(free, key=lambda s: (abs(s.depth - target), s.depth)))
    return chosen


def _mat_dims(site: dmg.Site) -> tuple[int, int, int]:
    """(positions, out, in) of the site's matrix view, without reading the weight."""
    return dmg.to_mats(np.empty(site.shape, dtype=np.uint8), site.layout).shape


def _copy_source(site: dmg.Site, sites: list[dmg.Site]) -> dmg.Site | None:
    positions, _, width = _mat_dims(site)
    same = [s for s in sites if s.tensor != site.tensor and _mat_dims(s)[0] == positions and _mat_dims(s)[2] == width]
    return min(same, key=lambda s: abs(s.depth - site.depth)) if same else None


def _swap_pair(sites: list[dmg.Site]) -> tuple[dmg.Site, dmg.Site] | None:
    pairs = [(a, b) for i, a in enumerate(sites) for b in sites[i + 1 :] if a.shape == b.shape and a.layout == b.layout]
    return min(pairs, key=lambda p: abs((p[0].depth + p[1].depth) / 2 - 0.5)) if pairs else None


def _site_case(model: str, k: int, site: dmg.Site, variant: str, other: dmg.Site | None) -> Case:
    damage, level, _ = dmg.LAYER_VARIANTS[variant]
    return Case(
        model,
        f"s{k}_{variant}",
        damage,
        level,
        "layer",
        k,
        [site.tensor],
        [site.layer_id],
        [site.name],
        [site.kind],
        round(site.depth, 3),
        other.tensor if other else None,
    )


def plan_cases(spec: ModelSpec, doc: dict, proto: onnx.ModelProto) -> tuple[list[Case], list[dmg.Site]]:
    """Every damaged variant of one model, and the eligible sites (for whole-model damage)."""
    sites = eligible_sites(doc, proto)
    cases = []
    for k, site in enumerate(choose_sites(sites)):
        for variant in dmg.LAYER_VARIANTS:
            other = _copy_source(site, sites) if variant == "copy_rows" else None
            if variant != "copy_rows" or other is not None:
                cases.append(_site_case(spec.model_id, k, site, variant, other))
    pair = _swap_pair(sites)
    if pair:
        a, b = pair
        cases.append(
            Case(
                spec.model_id,
                "swap",
                "swap",
                "two same-shape layers",
                "model",
                None,
                [a.tensor, b.tensor],
                [a.layer_id, b.layer_id],
                [a.name, b.name],
                [a.kind, b.kind],
                round((a.depth + b.depth) / 2, 3),
            )
        )
    if sites:
        for bits in (4, 2):
            cases.append(
                Case(
                    spec.model_id,
                    f"model_int{bits}",
                    "quantize",
                    f"int{bits} whole model",
                    "model",
                    tensors=[s.tensor for s in sites],
                )
            )
    return cases, sites


# ---- one case ----------------------------------------------------------------------------------
def materialise(case: Case, source: Path, sites: list[dmg.Site]) -> Path:
    """The damaged model file for `case` (cached: damage is deterministic)."""
    out = damaged_path(case.model, case.variant)
    if out.exists():
        return out
    proto = onnx.load(str(source), load_external_data=True)
    by_tensor = {s.tensor: s for s in sites}
    if case.scope == "layer":
        name = case.variant.split("_", 1)[1]
        other = by_tensor.get(case.other) if case.other else None
        dmg.apply_layer_damage(proto, by_tensor[case.tensors[0]], name, SEED, other)
    elif case.variant == "swap":
        dmg.apply_swap(proto, by_tensor[case.tensors[0]], by_tensor[case.tensors[1]])
    else:
        dmg.apply_model_quant(proto, [by_tensor[t] for t in case.tensors], int(case.variant[-1]))
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    onnx.save(proto, str(part))
    part.replace(out)
    return out


class Reference:
    """The intact model's seeded inputs and outputs, computed once per model (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[list, list, list[str]]] = {}

    def get(self, spec: ModelSpec, source: Path) -> tuple[list, list, list[str]]:
        with self._lock:
            if spec.model_id not in self._cache:
                inputs = _own_inputs(spec) if spec.model_id == OWN.model_id else truth.make_inputs(spec, source, SEED)
                self._cache[spec.model_id] = (inputs, truth.run_model(source, inputs), truth.output_names(source))
            return self._cache[spec.model_id]


def _own_inputs(spec: ModelSpec) -> list[dict[str, np.ndarray]]:
    from judgement_overfit import digits_test_images

    images = digits_test_images()[: spec.n_inputs]
    return [{"x": row[None, :]} for row in images]


def ground_truth(case: Case, spec: ModelSpec, source: Path, damaged: Path, ref: Reference) -> dict:
    """Functional damage of the variant (cached by model, variant and seed)."""
    path = truth_path(case.model, case.variant)
    cached = _read_json(path)
    if cached is not None:
        return cached
    inputs, reference, names = ref.get(spec, source)
    try:
        metrics = truth.compare(spec, reference, truth.run_model(damaged, inputs), names)
    except Exception as exc:  # onnxruntime refuses or crashes on the damaged model: that is damage
        metrics = {"ran": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "large_damage": True}
    _write_json(path, metrics)
    return metrics


# ---- scoring -----------------------------------------------------------------------------------
def findings_summary(doc: dict) -> dict:
    counts = {sev: sum(f["severity"] == sev for f in doc.get("findings", [])) for sev in ("error", "warning", "info")}
    rules: dict[str, int] = {}
    for f in doc.get("findings", []):
        if f["severity"] in ("warning", "error"):
            rules[f["rule"]] = rules.get(f["rule"], 0) + 1
    return {**counts, "rules": rules}


def _names_site(finding: dict, case: Case) -> bool:
    return (
        finding.get("tensor") in case.tensors
        or (finding.get("layer_id") is not None and finding["layer_id"] in case.layer_ids)
        or (finding.get("layer") is not None and finding["layer"] in case.layer_names)
    )


def score(case: Case, spec: ModelSpec, doc: dict, metrics: dict | None) -> dict:
    """The cases.jsonl record of one case: what was done, what it did, what wwaudit said."""
    verdict = None if "_error" in doc else doc["verdict"]["verdict"]
    on_site = [f for f in doc.get("findings", []) if f["severity"] in ("warning", "error") and _names_site(f, case)]
    if case.scope == "layer" or case.variant == "swap":
        detected = bool(on_site) and verdict not in (None, "pass")
    else:
        detected = verdict not in (None, "pass")
    if case.scope == "probe":
        detected = detected and doc.get("_exit") != 0
    if case.scope == "intact":  # not-pass on an intact model is a false alarm, not a detection
        detected = None
    record = {"model": case.model, "split": spec.split, "domain": spec.domain, **asdict(case)}
    if case.scope == "model" and case.variant != "swap":
        record["tensors"] = f"{len(case.tensors)} layers"
    record.update(metrics or {})
    record.update(
        {
            "verdict": verdict,
            "exit": doc.get("_exit"),
            "audit_error": doc.get("_error"),
            "detected": detected,
            "false_alarm": verdict != "pass" if case.scope == "intact" else None,
            "site_rules": sorted({f["rule"] for f in on_site}),
            "intact_site_rules": _intact_site_rules(case),
            "findings": findings_summary(doc),
            "analysed": (doc.get("summary") or {}).get("analysed"),
            "audit_seconds": doc.get("_seconds"),
        }
    )
    return record


def _intact_site_rules(case: Case) -> list[str] | None:
    """Rules that already named the damaged layer in the intact model's audit (a detection that
    only repeats them says nothing about the damage)."""
    if case.scope not in ("layer", "model") or not case.layer_ids:
        return None
    intact = _read_json(audit_path(case.model, "intact")) or {}
    return sorted(
        {f["rule"] for f in intact.get("findings", []) if f["severity"] in ("warning", "error") and _names_site(f, case)}
    )


# ---- driver ------------------------------------------------------------------------------------
class Recorder:
    """Appends records to cases.jsonl as they arrive (the lead reads it while a run goes on)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        DATA.mkdir(parents=True, exist_ok=True)
        self.path = DATA / "cases.jsonl"

    def add(self, record: dict) -> None:
        with self._lock, self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def compact(self) -> list[dict]:
        """Keep the latest record of each (model, variant), in a stable order; rewrite the file."""
        latest: dict[tuple[str, str], dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    latest[(rec["model"], rec["variant"])] = rec
        records = [latest[k] for k in sorted(latest)]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return records


def _specs(args: argparse.Namespace) -> list[ModelSpec]:
    chosen = [*MODELS, OWN]
    if args.models:
        wanted = set(args.models.split(","))
        unknown = wanted - {s.model_id for s in chosen}
        if unknown:
            raise SystemExit(f"judgement: unknown models {sorted(unknown)}; known: {', '.join(BY_ID)}, {OWN.model_id}")
        chosen = [s for s in chosen if s.model_id in wanted]
    return [s for s in chosen if args.split in ("all", s.split)]


def _wanted(variant: str, args: argparse.Namespace) -> bool:
    if not args.variants:
        return True
    return any(variant == v or variant.endswith("_" + v) for v in args.variants.split(","))


def intact_phase(specs: list[ModelSpec], args: argparse.Namespace, rec: Recorder) -> dict[str, tuple[Path, dict]]:
    """Fetch every model and audit it intact (plus the fail-closed probes), in parallel."""
    sources = {s.model_id: fetch(s) for s in specs}
    jobs = [(s, "intact", []) for s in specs] + [(s, p, a) for s in specs for p, a in PROBES.items()]
    jobs = [j for j in jobs if j[1] == "intact" or _wanted(j[1], args)]  # damage needs the intact audit
    docs: dict[str, tuple[Path, dict]] = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(run_audit, sources[s.model_id], audit_path(s.model_id, v), [*args.extra, *a], args.reaudit): (s, v)
            for s, v, a in jobs
        }
        for fut in as_completed(futures):
            spec, variant = futures[fut]
            doc = fut.result()
            scope = "intact" if variant == "intact" else "probe"
            rec.add(score(Case(spec.model_id, variant, scope, variant, scope), spec, doc, None))
            if variant == "intact":
                docs[spec.model_id] = (sources[spec.model_id], doc)
            _progress(spec.model_id, variant, doc)
    return docs


def _progress(model: str, variant: str, doc: dict) -> None:
    verdict = doc.get("verdict", {}).get("verdict") if "_error" not in doc else "ERROR " + doc["_error"][-120:]
    print(f"  {model:22s} {variant:24s} {verdict}  ({doc.get('_seconds')} s)", flush=True)


def damage_phase(specs: list[ModelSpec], intact: dict[str, tuple[Path, dict]], args: argparse.Namespace, rec: Recorder) -> None:
    """Plan, build, measure and audit every damaged variant; site 0 of every model first."""
    work: list[tuple[int, int, Case, ModelSpec, list[dmg.Site]]] = []
    for spec in specs:
        if spec.model_id not in intact or "_error" in intact[spec.model_id][1]:
            continue
        source, doc = intact[spec.model_id]
        if spec.model_id == OWN.model_id:
            work.append((0, 0, Case(OWN.model_id, "memorised", "over-training", "random labels memorised", "model"), spec, []))
            continue
        if not spec.damage:
            continue
        cases, sites = plan_cases(spec, doc, onnx.load(str(source), load_external_data=False))
        _write_json(
            DATA / "plans" / f"{spec.model_id}.json", {"sites": [asdict(s) for s in sites], "cases": [asdict(c) for c in cases]}
        )
        order = list(dmg.LAYER_VARIANTS) + list(dmg.MODEL_VARIANTS)
        for case in cases:
            key = case.variant.split("_", 1)[1] if case.scope == "layer" else case.variant
            work.append((case.site if case.site is not None else 0, order.index(key) if key in order else 0, case, spec, sites))
    work = sorted((w for w in work if _wanted(w[2].variant, args)), key=lambda w: (w[0], w[1], w[2].model))
    ref = Reference()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(_run_case, c, s, intact[s.model_id][0], sites, ref, args): c for _, _, c, s, sites in work}
        for fut in as_completed(futures):
            record = fut.result()
            rec.add(record)
            print(
                f"  {record['model']:22s} {record['variant']:24s} {record['verdict']}  detected={record['detected']}  "
                f"cos={record.get('cosine')} top1={record.get('top1')}",
                flush=True,
            )


def _run_case(case: Case, spec: ModelSpec, source: Path, sites: list[dmg.Site], ref: Reference, args: argparse.Namespace) -> dict:
    try:
        if case.model == OWN.model_id:
            from judgement_overfit import build

            damaged = build(DATA / "own")["memorised"]
        else:
            damaged = materialise(case, source, sites)
        metrics = ground_truth(case, spec, source, damaged, ref)
        doc = run_audit(damaged, audit_path(case.model, case.variant), args.extra, args.reaudit)
    except Exception as exc:  # one broken case must not stop a long run; it is recorded
        doc, metrics = {"_error": f"harness: {type(exc).__name__}: {exc}"[:400]}, None
    return score(case, spec, doc, metrics)


def rescore(specs: list[ModelSpec], rec: Recorder) -> None:
    """Rebuild every record from the cached plans, ground truth and audits (--score-only)."""
    by_id = {s.model_id: s for s in specs}
    for spec in specs:
        variants = [Case(spec.model_id, "intact", "intact", "intact", "intact")]
        variants += [Case(spec.model_id, p, "probe", p, "probe") for p in PROBES]
        plan = _read_json(DATA / "plans" / f"{spec.model_id}.json")
        variants += [Case(**c) for c in (plan or {}).get("cases", [])]
        if spec.model_id == OWN.model_id:
            variants.append(Case(OWN.model_id, "memorised", "over-training", "random labels memorised", "model"))
        for case in variants:
            doc = _read_json(audit_path(case.model, case.variant))
            if doc is not None:
                rec.add(score(case, by_id[case.model], doc, _read_json(truth_path(case.model, case.variant))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="audits run in parallel (default 1)")
    parser.add_argument("--models", help="comma-separated model ids (default: all)")
    parser.add_argument("--variants", help="comma-separated variants: intact, probe_no_layers, noise50, s0_noise50, swap, ...")
    parser.add_argument("--split", choices=("tune", "holdout", "all"), default="all")
    parser.add_argument("--reaudit", action="store_true", help="re-run wwaudit on cached models; keep damage and ground truth")
    parser.add_argument("--score-only", action="store_true", help="only recompute the tables from cached results")
    parser.add_argument("--wwaudit-args", default="", help="extra arguments passed to every wwaudit run (quoted)")
    args = parser.parse_args(argv)
    args.extra = shlex.split(args.wwaudit_args)
    specs = _specs(args)
    rec = Recorder()
    started = time.monotonic()
    if args.score_only:
        rec.path.unlink(missing_ok=True)
        rescore([*MODELS, OWN], rec)
    else:
        intact = intact_phase(specs, args, rec)
        damage_phase(specs, intact, args, rec)
    records = rec.compact()
    text, markdown = report.tables(records, {s.model_id: s for s in [*MODELS, OWN]}, DATA)
    print(text)
    (DATA / "tables.md").write_text(markdown)
    (DATA / "readme_tables.md").write_text(report.readme_tables(records))
    print(
        f"\n{len(records)} cases; tables in {DATA / 'tables.md'} and {DATA / 'readme_tables.md'}; {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
