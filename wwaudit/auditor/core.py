"""The one place that orchestrates an audit: load → matrices → spectra → metrics → findings.

Progress is reported through a small callback interface so the CLI can show a bar while the
library stays silent; nothing here prints.
"""

from __future__ import annotations

import os
import re
import time
from typing import Protocol

import numpy as np
import onnx

from wwaudit.auditor import findings as findings_mod
from wwaudit.auditor.analysis import analyse_matrices
from wwaudit.auditor.graph import walk
from wwaudit.auditor.layers import LayerSpec, plan_layers, safe_name, storage_dtype
from wwaudit.auditor.loader import LoadedModel, load_model
from wwaudit.auditor.options import AuditOptions
from wwaudit.auditor.results import AuditResult, LayerResult, ModelInfo
from wwaudit.errors import InputError, UsageError

# Machine epsilon of the stored dtype, for the rank threshold σ_max·N·eps.
_EPS = {
    onnx.TensorProto.DOUBLE: float(np.finfo(np.float64).eps),
    onnx.TensorProto.FLOAT: float(np.finfo(np.float32).eps),
    onnx.TensorProto.FLOAT16: float(np.finfo(np.float16).eps),
    onnx.TensorProto.BFLOAT16: 2.0**-7,
    onnx.TensorProto.FLOAT8E4M3FN: 2.0**-3,
    onnx.TensorProto.FLOAT8E4M3FNUZ: 2.0**-3,
    onnx.TensorProto.FLOAT8E5M2: 2.0**-2,
    onnx.TensorProto.FLOAT8E5M2FNUZ: 2.0**-2,
}


def dtype_eps(data_type: int) -> float:
    """Epsilon of the weights' own dtype (float32's for integer/quantized storage: scales are float32)."""
    return _EPS.get(data_type, float(np.finfo(np.float32).eps))


class Progress(Protocol):
    """What the orchestrator tells a progress display."""

    def start(self, total: int) -> None: ...

    def advance(self, name: str) -> None: ...

    def finish(self) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, name: str) -> None:
        pass

    def finish(self) -> None:
        pass


def model_info(loaded: LoadedModel, parameters: int, external: bool) -> ModelInfo:
    """Identity block of the audited file."""
    proto = loaded.proto
    return ModelInfo(
        path=os.path.basename(loaded.path),
        sha256=loaded.sha256,
        size_bytes=loaded.size_bytes,
        producer=safe_name(proto.producer_name),
        producer_version=safe_name(proto.producer_version),
        opset={imp.domain or "ai.onnx": int(imp.version) for imp in proto.opset_import},
        ir_version=int(proto.ir_version),
        parameters=parameters,
        graph_name=safe_name(proto.graph.name),
        external_data=external,
        doc_string=proto.doc_string[:2000],
    )


def _layer_result(index: int, spec: LayerSpec) -> LayerResult:
    tensor = spec.tensor
    result = LayerResult(
        id=index,
        name=safe_name(spec.name),
        op=spec.op,
        tensor=safe_name(tensor.name),
        kind=spec.view.kind if spec.view else "none",
        shape=list(tensor.dims),
        dtype=storage_dtype(tensor),
        status="skipped" if spec.skipped else "ok",
        reason=spec.reason,
        used_by=[safe_name(u) for u in spec.used_by],
        notes=list(spec.notes),
    )
    if tensor.scope:
        result.notes.append(f"in {tensor.scope}")
    if not spec.skipped:
        result.N, result.M, result.slices = spec.shape_info()
    return result


def _selected(spec: LayerSpec, pattern: re.Pattern[str] | None) -> bool:
    return pattern is None or bool(pattern.search(spec.name) or pattern.search(spec.tensor.name))


def audit(path: str, options: AuditOptions | None = None, progress: Progress | None = None) -> AuditResult:
    """Audit the ONNX model at `path`; raises InputError/UsageError for unusable input."""
    options = options or AuditOptions()
    progress = progress or _NoProgress()
    try:
        pattern = re.compile(options.layers) if options.layers else None
    except re.error as exc:
        raise UsageError(f"--layers: invalid regular expression: {exc}") from None
    t0 = time.perf_counter()
    loaded = load_model(path)
    walked = walk(loaded.proto, loaded.base_dir)
    specs = [s for s in plan_layers(walked) if _selected(s, pattern)]
    t_load = time.perf_counter() - t0
    parameters = sum(t.size for t in walked.tensors.values() if t.is_float or (t.is_integer and len(t.dims) >= 2))
    external = any(t.is_external for t in walked.tensors.values())

    layers = [_layer_result(i, spec) for i, spec in enumerate(specs)]
    todo = [(layer, spec) for layer, spec in zip(layers, specs) if not spec.skipped]
    progress.start(len(todo))
    for layer, spec in todo:
        if options.max_evals is not None and (layer.M or 0) * (layer.slices or 1) > options.max_evals:
            layer.status, layer.reason = "skipped", f"more than --max-evals {options.max_evals} eigenvalues"
            progress.advance(layer.name)
            continue
        try:
            mats = spec.matrices()
        except InputError as exc:
            layer.status, layer.reason = "error", str(exc)
            progress.advance(layer.name)
            continue
        analysis = analyse_matrices(mats, layer.kind, dtype_eps(spec.tensor.data_type), options)
        del mats
        layer.status = analysis.status
        layer.reason = analysis.reason
        layer.metrics.update(analysis.metrics)
        layer.notes.extend(analysis.notes)
        if analysis.spectrum is not None:
            layer.evals = analysis.spectrum.evals
        progress.advance(layer.name)
    progress.finish()
    t_analyse = time.perf_counter() - t0 - t_load

    found = findings_mod.evaluate(layers)
    for problem in walked.problems:
        found.append(findings_mod.Finding("WW000", "warning", f"graph: {problem}"))
    verdict, reasons = findings_mod.verdict(found)
    return AuditResult(
        model=model_info(loaded, parameters, external),
        layers=layers,
        findings=found,
        verdict=verdict,
        verdict_reasons=reasons,
        options=options.to_dict(),
        summary=summarise(layers, verdict),
        timings={"load_s": t_load, "analyse_s": t_analyse},
    )


def _mean(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def summarise(layers: list[LayerResult], verdict: str) -> dict:
    """Model-level averages over analysed layers (weightwatcher's summary convention)."""
    analysed = [layer for layer in layers if layer.analysed]
    fitted = [layer for layer in layers if layer.status == "ok"]
    alphas = [layer.metric("alpha") for layer in fitted if layer.metric("alpha") is not None]
    in_band = [a for a in alphas if findings_mod.ALPHA_LOW <= a <= findings_mod.ALPHA_HIGH]
    return {
        "layers": len(layers),
        "analysed": len(analysed),
        "skipped": sum(1 for layer in layers if layer.status == "skipped"),
        "errors": sum(1 for layer in layers if layer.status == "error"),
        "fit_failed": sum(1 for layer in layers if layer.status == "fit_failed"),
        "alpha_mean": _mean(alphas),
        "alpha_weighted_mean": _mean([layer.metric("alpha_weighted") for layer in fitted]),
        "log_norm_mean": _mean([layer.metric("log_norm") for layer in analysed]),
        "log_spectral_norm_mean": _mean([layer.metric("log_spectral_norm") for layer in analysed]),
        "stable_rank_mean": _mean([layer.metric("stable_rank") for layer in analysed]),
        "share_alpha_in_band": (len(in_band) / len(alphas)) if alphas else None,
        "verdict": verdict,
    }
