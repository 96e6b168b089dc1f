"""--plots-dir: each analysed layer's ESD figure as its own PNG or SVG file (weightwatcher's savefig).

The figure is the report's (log-log ESD with the power-law fit, linear ESD with the Marchenko-Pastur
bulk), so a file and the report's detail section never disagree. Every analysed layer with at least
two positive eigenvalues gets a file, not only the flagged ones: a folder of plots is for browsing.
"""

from __future__ import annotations

import base64
import os
import re

import numpy as np

from wwaudit.errors import OutputError
from wwaudit.formats import StagedOutputs
from wwaudit.records import AuditResult

FILE_FORMATS = ("png", "svg")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(layer_id: int, name: str, fmt: str) -> str:
    """`0007_encoder.layer.0.attn.q.png`: the id keeps files in layer order and unique; the name is
    reduced to safe characters (names come from the model file and may hold '/' or '..')."""
    safe = _UNSAFE.sub("_", name).strip("._")[:80] or "layer"
    return f"{layer_id:04d}_{safe}.{fmt}"


def write_plots(
    result: AuditResult, folder: str, staged: StagedOutputs, fmt: str = "png", workers: int | None = None
) -> list[str]:
    """Draw the layer plots and stage them as files in `folder` (created if missing); returns their
    paths. Staged like every other output (formats.StagedOutputs): they appear only when the run
    commits its outputs, so a run stopped by --timeout leaves no half-written plots folder."""
    from wwaudit.formats.report import plots

    if fmt not in FILE_FORMATS:
        raise OutputError(f"--plots-format {fmt}: use png or svg")
    staged.add_folder(folder)
    jobs = [
        plots.LayerPlotJob(
            key=str(layer.id),
            evals=np.asarray(layer.evals),
            random_evals=None if layer.random_evals is None else np.asarray(layer.random_evals),
            metrics={k: layer.metric(k) for k in plots.PLOT_METRICS},
            fmt=fmt,
            legend=True,
        )
        for layer in result.layers
        if layer.analysed and layer.evals is not None
    ]
    names = {str(layer.id): file_name(layer.id, layer.name, fmt) for layer in result.layers}
    written = []
    with plots.PlotRenderer([], jobs, fmt=fmt, workers=workers) as renderer:
        for key, uri in renderer.uris().items():
            if uri is not None:
                path = os.path.join(folder, names[key])
                staged.add(path, base64.b64decode(uri.split(",", 1)[1]))
                written.append(path)
    return written
