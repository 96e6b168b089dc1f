"""Audit many models in one run (`wwaudit audit MODEL… --out-dir DIR`): a model zoo, a vendor's
delivery of variants, a nightly audit of a registry.

Why one run and not a loop over `wwaudit MODEL`: the layer tasks of *all* the models go to the
scheduler together, largest first, so the workers (or the cluster) stay busy until the very last
layer of the whole zoo instead of idling at the tail of each model; and one broken model is one
row that says why, not the end of the run. Each model's result is exactly the one a single-model
run gives (same tasks, same judge), so its JSON is byte-identical to `wwaudit MODEL --json`.

Memory: every model is loaded and planned before the tasks run. Tasks hold references to
external data, but weights stored inside a `.onnx` file travel in its tasks, so such models are
held in memory together; audit a zoo of large in-file models in batches.
"""

from __future__ import annotations

import dataclasses
import os
import time

from wwaudit.engine.core import PreparedAudit, finish, prepare
from wwaudit.engine.scheduler import LayerExecutor, LayerOutcome, LayerTask, Progress, run_layers
from wwaudit.errors import EXIT_ERROR, ResourceLimitError, UsageError, WwauditError, exit_code
from wwaudit.ingest.sources import is_model_folder
from wwaudit.options import AuditOptions
from wwaudit.records import ZooEntry
from wwaudit.rules.policy import Policy

# From worst to best: what the exit code of a run over several models follows (README, exit codes).
VERDICT_ORDER = ("error", "fail", "inconclusive", "review", "pass")
# Names of the run's own files in the output folder (summary.csv/html/pdf): no model takes them.
_RESERVED = frozenset({"summary"})


def model_paths(arguments: list[str]) -> list[str]:
    """The models named on the command line: files as given, folders as every `.onnx` file in them
    and their subfolders (sorted), except a sharded safetensors folder, which is one model. A path
    that does not exist stays, and its row will say so."""
    paths: list[str] = []
    for arg in arguments:
        if not os.path.isdir(arg) or is_model_folder(arg):
            paths.append(arg)
            continue
        found = sorted(
            os.path.join(root, name) for root, _dirs, files in os.walk(arg) for name in files if name.lower().endswith(".onnx")
        )
        if not found:
            raise UsageError(f"{arg}: folder holds no .onnx file")
        paths.extend(found)
    return paths


def unique_names(paths: list[str]) -> list[str]:
    """A file-name-safe name per model: its file's stem, with its folder's name when stems repeat
    (exporters write `model.onnx` into a folder per model), then a number if still not unique."""
    stems = [os.path.splitext(os.path.basename(p))[0] or "model" for p in paths]
    names: list[str] = []
    for path, stem in zip(paths, stems):
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        name = f"{parent}-{stem}" if stems.count(stem) > 1 and parent else stem
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "model"
        base, n = name, 2
        while name in names or name in _RESERVED:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _why(exc: BaseException) -> str:
    """A broken model's row: the one line the single-model command would print."""
    text = " ".join(str(exc).split())[:500]
    if isinstance(exc, WwauditError):
        return text
    if isinstance(exc, MemoryError):
        return "out of memory while loading or planning the model"
    return f"internal error: {type(exc).__name__}: {text}"


def _prepare_all(entries: list[ZooEntry], options: AuditOptions) -> dict[str, PreparedAudit]:
    prepared = {}
    for entry in entries:
        t0 = time.perf_counter()
        try:
            prepared[entry.name] = prepare(entry.path, options)
        except (UsageError, ResourceLimitError):
            raise  # the same for every model: the run stops, as for one model
        except Exception as exc:  # one broken model must not stop the others: its row says why
            entry.error = _why(exc)
        entry.seconds = time.perf_counter() - t0
    return prepared


def audit_many(
    paths: list[str],
    options: AuditOptions,
    progress: Progress,
    executor: LayerExecutor | None = None,
    policy: Policy | None = None,
) -> list[ZooEntry]:
    """Audit every model of `paths`, their layer tasks scheduled together (largest first); one
    entry per model, in the order given, with its result or the reason it has none."""
    entries = [ZooEntry(name, path) for name, path in zip(unique_names(paths), paths)]
    prepared = _prepare_all(entries, options)
    tasks: list[LayerTask] = []
    owner: dict[int, tuple[str, int]] = {}  # global task index -> (model, its layer id)
    for name, prep in prepared.items():
        for task in prep.tasks:
            owner[len(tasks)] = (name, task.index)
            tasks.append(dataclasses.replace(task, index=len(tasks), name=f"{name}/{task.name}"))
    t0 = time.perf_counter()
    per_model: dict[str, list[LayerOutcome]] = {name: [] for name in prepared}
    for outcome in run_layers(tasks, progress, options.workers, executor):
        name, outcome.index = owner[outcome.index]
        per_model[name].append(outcome)
    wall = time.perf_counter() - t0
    for entry in entries:
        if entry.name not in prepared:
            continue
        outcomes = per_model[entry.name]
        try:
            entry.result = finish(prepared.pop(entry.name), outcomes, wall, policy)
        except Exception as exc:
            entry.error = _why(exc)
        entry.seconds += sum(o.seconds for o in outcomes)
    return entries


def worst_verdict(entries: list[ZooEntry]) -> str:
    """The worst verdict of the run (VERDICT_ORDER: error, fail, inconclusive, review, pass)."""
    return min((e.verdict for e in entries), key=VERDICT_ORDER.index, default="inconclusive")


def zoo_exit_code(entries: list[ZooEntry]) -> int:
    """The run's exit code, the worst verdict's: 2 a model could not be audited, 1 fail, 3 inconclusive, 0."""
    verdict = worst_verdict(entries)
    return EXIT_ERROR if verdict == "error" else exit_code(verdict)
