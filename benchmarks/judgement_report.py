"""Tables of the judgement benchmark, from the cases.jsonl records: plain text (80 columns) for
the terminal and Markdown for the README, each table separately for `tune` and `holdout`."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

import judgement_damage as dmg

SPLITS = ("tune", "holdout")
OWN_DOMAIN_PREFIX = "own"
# the "must be found" damage: (damage, level or None for every level)
MUST_DETECT = {
    ("reinit", None),
    ("noise", "50%"),
    ("noise", "100%"),
    ("rank", "10%"),
    ("rank", "2%"),
    ("duplicate", "rows"),
    ("scale", "x30"),
    ("zeros", None),
    ("nan", None),
}
COSINE_BINS = ((0.999, "cos >= 0.999"), (0.99, "0.99-0.999"), (0.95, "0.95-0.99"), (0.80, "0.80-0.95"), (-2.0, "< 0.80"))
TOP1_BINS = ((1.0, "top1 = 1"), (0.90, "0.90-1"), (0.50, "0.50-0.90"), (-1.0, "< 0.50"))


class Table:
    """Rows of strings rendered as aligned text and as a Markdown table."""

    def __init__(self, title: str, headers: list[str]) -> None:
        self.title, self.headers, self.rows = title, headers, []

    def add(self, *cells: object) -> None:
        self.rows.append([_cell(c) for c in cells])

    def text(self) -> str:
        widths = [max(len(r[i]) for r in [self.headers, *self.rows]) for i in range(len(self.headers))]

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        body = [line(self.headers), "  ".join("-" * w for w in widths), *map(line, self.rows)]
        return "\n".join([self.title, *body])

    def markdown(self) -> str:
        rows = [self.headers, ["---"] * len(self.headers), *self.rows]
        return "\n".join([f"**{self.title}**", "", *("| " + " | ".join(r) + " |" for r in rows)])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "-"


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _real(r: dict) -> bool:
    return not r["domain"].startswith(OWN_DOMAIN_PREFIX)


def _size_mb(spec: object, data: Path) -> float | None:
    """The model's file plus its external data, as extracted from the wheel."""
    files = (
        [data / "own" / "digits_mlp_normal.onnx"]
        if spec.dist == "(own)"
        else [
            Path.home() / ".cache" / "wwaudit-test-wheels" / "extracted" / f"{spec.dist}-{spec.version}" / m
            for m in (spec.member, *spec.extra_members)
        ]
    )
    return sum(f.stat().st_size for f in files) / 1e6 if all(f.exists() for f in files) else None


def models_table(records: list[dict], specs: dict, data: Path) -> Table:
    table = Table("Models", ["model", "split", "domain", "MB", "analysed", "damaged"])
    intact = [r for r in records if r["variant"] == "intact"]
    for r in sorted(intact, key=lambda r: (r["split"], r["model"])):
        size = _size_mb(specs[r["model"]], data) if r["model"] in specs else None
        damaged = sum(1 for x in records if x["model"] == r["model"] and x["scope"] in ("layer", "model"))
        table.add(r["model"], r["split"], r["domain"][:28], f"{size:.1f}" if size else None, r["analysed"], damaged)
    return table


def intact_table(records: list[dict], split: str) -> Table:
    table = Table(f"Intact models ({split})", ["model", "verdict", "err", "warn", "info", "warning rules"])
    for r in sorted((r for r in records if r["variant"] == "intact" and r["split"] == split), key=lambda r: r["model"]):
        f = r["findings"]
        rules = " ".join(f"{k}x{v}" for k, v in sorted(f["rules"].items()))
        table.add(r["model"], r["verdict"] or "ERROR", f["error"], f["warning"], f["info"], rules[:34])
    return table


def intact_summary(records: list[dict]) -> Table:
    table = Table("Intact real models: false alarms", ["split", "models", "pass", "review", "fail", "false alarm", "median warn"])
    for split in SPLITS:
        rs = [r for r in records if r["variant"] == "intact" and r["split"] == split and _real(r)]
        verdicts = [r["verdict"] for r in rs]
        warns = [r["findings"]["warning"] for r in rs]
        table.add(
            split,
            len(rs),
            verdicts.count("pass"),
            verdicts.count("review"),
            verdicts.count("fail"),
            _pct(sum(v != "pass" for v in verdicts), len(rs)),
            f"{statistics.median(warns):g}" if warns else None,
        )
    return table


def damage_table(records: list[dict], split: str) -> Table:
    table = Table(f"Damage detection ({split})", ["damage", "level", "cases", "detected", "large", "mean cos", "mean top1"])
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r["split"] == split and r["scope"] in ("layer", "model"):
            groups.setdefault((r["damage"], r["level"]), []).append(r)
    for (damage, level), rs in sorted(groups.items(), key=lambda kv: _level_order(*kv[0])):
        table.add(
            damage,
            level[:22],
            len(rs),
            _pct(sum(r["detected"] for r in rs), len(rs)),
            _pct(sum(bool(r.get("large_damage")) for r in rs), len(rs)),
            _mean([r.get("cosine") for r in rs]),
            _mean([r.get("top1") for r in rs]),
        )
    return table


def _level_order(damage: str, level: str) -> tuple[int, str]:
    order = [v[:2] for v in dmg.LAYER_VARIANTS.values()] + list(dmg.MODEL_VARIANTS.values())
    return (order.index((damage, level)) if (damage, level) in order else len(order), level)


def curve_table(records: list[dict], split: str, key: str, bins: tuple, title: str) -> Table:
    table = Table(f"Detection against functional damage, {title} ({split})", ["bin", "cases", "detected"])
    rs = [r for r in records if r["split"] == split and r["scope"] in ("layer", "model")]
    broken = [r for r in rs if not r.get("ran", True) or r.get("nonfinite")]
    table.add("did not run / NaN out", len(broken), _pct(sum(r["detected"] for r in broken), len(broken)))
    rest = [r for r in rs if r not in broken and r.get(key) is not None]
    for i, (low, label) in enumerate(bins):
        high = bins[i - 1][0] if i else float("inf")
        inside = [r for r in rest if low <= r[key] < high or (i == 0 and r[key] >= low)]
        table.add(label, len(inside), _pct(sum(r["detected"] for r in inside), len(inside)))
    return table


def _must(r: dict) -> bool:
    return (r["damage"], None) in MUST_DETECT or (r["damage"], r["level"]) in MUST_DETECT


def _target_rows(records: list[dict], split: str) -> list[tuple[str, str, bool | None]]:
    """(target, measured value, met?) for one split."""
    mine = [r for r in records if r["split"] == split]
    intact = [r for r in mine if r["variant"] == "intact" and _real(r)]
    probes = [r for r in mine if r["scope"] == "probe"]
    must = [r for r in mine if r["scope"] == "layer" and _must(r)]
    large = [r for r in mine if r["scope"] in ("layer", "model") and r.get("large_damage")]

    def share(rs: list[dict], ok: Any) -> float | None:
        return sum(map(ok, rs)) / len(rs) if rs else None

    warns = [r["findings"]["warning"] for r in intact]
    rows = [
        ("probes: never pass, never exit 0", share(probes, lambda r: r["detected"]), 1.0),
        ("intact: >= 90% pass", share(intact, lambda r: r["verdict"] == "pass"), 0.90),
        ("intact: none fail", share(intact, lambda r: r["verdict"] != "fail"), 1.0),
        ("must-detect damage found: >= 95%", share(must, lambda r: r["detected"]), 0.95),
        ("large damage found: >= 90%", share(large, lambda r: r["detected"]), 0.90),
    ]
    out = [
        (name, f"{v:.0%} of {n}" if v is not None else "n/a", None if v is None else v >= goal)
        for (name, v, goal), n in zip(rows, (len(probes), len(intact), len(intact), len(must), len(large)))
    ]
    median = statistics.median(warns) if warns else None
    out.insert(
        3, ("intact: median warnings <= 2", f"{median}" if median is not None else "n/a", None if median is None else median <= 2)
    )
    return out


def targets_table(records: list[dict]) -> Table:
    table = Table("Issue 17 targets", ["split", "target", "measured", "result"])
    for split in SPLITS:
        for name, value, met in _target_rows(records, split):
            table.add(split, name, value, "n/a" if met is None else ("PASS" if met else "FAIL"))
    return table


def tables(records: list[dict], specs: dict, data: Path) -> tuple[str, str]:
    """All tables as (plain text, Markdown)."""
    built: list[Table] = [models_table(records, specs, data)]
    per_split: list[Callable[[str], Table]] = [
        lambda s: intact_table(records, s),
        lambda s: damage_table(records, s),
        lambda s: curve_table(records, s, "cosine", COSINE_BINS, "cosine"),
        lambda s: curve_table(records, s, "top1", TOP1_BINS, "top-1"),
    ]
    built.append(intact_summary(records))
    for make in per_split:
        built += [make(s) for s in SPLITS]
    own = [r for r in records if not _real(r)]
    if own:
        table = Table("Own MLP (over-training)", ["variant", "verdict", "warn", "detected", "top1 vs normal"])
        for r in own:
            table.add(r["variant"], r["verdict"], r["findings"]["warning"], r["detected"], r.get("top1"))
        built.append(table)
    built.append(targets_table(records))
    return "\n\n".join(t.text() for t in built), "\n\n".join(t.markdown() for t in built) + "\n"


# ---- the README's "How reliable are these findings" tables --------------------------------------
README_SITES = ("s0", "s1")  # the README tables: damage at 25 % and 50 % of depth, and whole-model damage
README_COSINE_BINS = ((0.0, 0.5), (0.5, 0.9), (0.9, 0.95), (0.95, 0.99), (0.99, 1.0))


def _frac(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100.0 * part / whole:.0f}%)" if whole else "–"


def _in_readme(r: dict) -> bool:
    return r["scope"] == "model" or (r["scope"] == "layer" and r["variant"][:2] in README_SITES)


def _found(rs: list[dict]) -> str:
    return _frac(sum(bool(r["detected"]) for r in rs), len(rs))


def _readme_intact(mine: list[dict]) -> list[str]:
    intact = sorted((r for r in mine if r["variant"] == "intact"), key=lambda r: r["model"])
    lines = ["| intact model | verdict | warnings | errors | rules at warning+ |", "| --- | --- | --- | --- | --- |"]
    for r in intact:
        f = r["findings"]
        lines.append(
            f"| {r['model']} | {r['verdict'] or 'audit error'} | {f['warning']} | {f['error']} | {', '.join(sorted(f['rules'])) or '–'} |"
        )
    probes = [r for r in mine if r["scope"] == "probe"]
    verdicts = sorted({str(r["verdict"]) for r in probes})
    lines += [
        "",
        f"Probes (`--layers` matching nothing, `--max-evals 5`): {_found(probes)} not `pass` (verdicts: {', '.join(verdicts)}).",
        "",
    ]
    return lines


def _readme_damage(mine: list[dict]) -> list[str]:
    lines = [
        "| damage | level | scope | cases | detected | large functional damage | detected of those |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in mine:
        if _in_readme(r):
            groups.setdefault((r["damage"], r["level"], r["scope"]), []).append(r)
    for (damage, level, scope), rs in sorted(groups.items(), key=lambda kv: _level_order(kv[0][0], kv[0][1])):
        large = [r for r in rs if r.get("large_damage")]
        lines.append(f"| {damage} | {level} | {scope} | {len(rs)} | {_found(rs)} | {len(large)} | {_found(large)} |")
    return lines


def _readme_targets(mine: list[dict]) -> list[str]:
    intact = [r for r in mine if r["variant"] == "intact"]
    warns = [r["findings"]["warning"] for r in intact]
    must = [r for r in mine if r["scope"] == "layer" and _in_readme(r) and _must(r)]
    large = [r for r in mine if _in_readme(r) and r.get("large_damage")]
    must_all = [r for r in mine if r["scope"] == "layer" and _must(r)]
    large_all = [r for r in mine if r["scope"] in ("layer", "model") and r.get("large_damage")]
    bins = []
    for low, high in README_COSINE_BINS:
        inside = [r for r in mine if _in_readme(r) and r.get("cosine") is not None and low <= r["cosine"] < high + (high == 1.0)]
        bins.append(f"cos [{low:g}, {high:g}{']' if high == 1.0 else ')'}: {_found(inside)}")
    median = f"{statistics.median(warns):g}" if warns else "n/a"
    return [
        "",
        f"Targets: intact pass {_frac(sum(r['verdict'] == 'pass' for r in intact), len(intact))} (target ≥ 90%), intact fail "
        f"{sum(r['verdict'] == 'fail' for r in intact)} (target 0), median warnings {median} (target ≤ 2); must-detect damage "
        f"named {_found(must)} (target ≥ 95%); large functional damage detected {_found(large)} (target ≥ 90%). With the "
        f"other sites' cases too (the targets table of `tables.md`): {_found(must_all)} and {_found(large_all)}.",
        "",
        "Detection against functional damage (output cosine to the intact model): " + "; ".join(bins) + ".",
        "",
    ]


def readme_tables(records: list[dict]) -> str:
    """The README section's tables, per split: intact models, probes, damage at sites s0/s1 and
    whole-model damage with its functional effect, the targets, and detection by output cosine."""
    out: list[str] = []
    for split in SPLITS:
        mine = [r for r in records if r["split"] == split]
        n_intact = sum(r["variant"] == "intact" for r in mine)
        out += [f"**{split}** ({n_intact} intact models)", ""]
        out += _readme_intact(mine) + _readme_damage(mine) + _readme_targets(mine)
    return "\n".join(out)
