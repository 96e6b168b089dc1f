"""Layers read in blocks (wwaudit/streamed.py, issue 19): a MatMulNBits weight or a memory-mapped
table streams into its Gram matrix chunk by chunk under --fast, and gives the eigenvalues and
metrics of the dense path exactly, in less memory than one dense copy of the weight."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from genai_layout import DecoderConfig, write_decoder
from wwaudit.engine import scheduler
from wwaudit.engine.core import prepare
from wwaudit.ingest.plan import LayerSpec
from wwaudit.options import AuditOptions
from wwaudit.spectral import spectra
from wwaudit.spectral.analysis import analyse_matrices
from wwaudit.streamed import StreamedMatrix


def _tasks(path: Path) -> dict[str, scheduler.LayerTask]:
    return {t.name: t for t in prepare(str(path), AuditOptions(fast=True, workers=1)).tasks}


def _dense(task: scheduler.LayerTask) -> list[np.ndarray]:
    return [np.asarray(m) for m in task.spec.matrices(widen=False)]


@pytest.mark.parametrize("gram_chunk", [spectra.GRAM_CHUNK_ELEMENTS, 1 << 12])
def test_streamed_layers_give_the_dense_eigenvalues_and_metrics(tmp_path: Path, monkeypatch, gram_chunk: int) -> None:
    # asymmetric zero points, separate Q/K/V, 64-blocks; a small Gram chunk makes every matrix
    # (down_proj's column blocks included) stream in many chunks
    monkeypatch.setattr(spectra, "GRAM_CHUNK_ELEMENTS", gram_chunk)
    cfg = DecoderConfig(layers=1, packed_qkv=False, symmetric=False, block_size=64, hidden=256, intermediate=704, vocab=600)
    tasks = _tasks(write_decoder(tmp_path / "m", cfg))
    packed = _tasks(write_decoder(tmp_path / "p", DecoderConfig(layers=1)))  # Q/K/V as rows of one packed weight
    tasks.update({f"packed {name}": task for name, task in packed.items()})
    streamed = 0
    for name, task in tasks.items():
        mats = task.matrices()
        dense = _dense(task)
        assert [m.shape for m in mats] == [m.shape for m in dense], name
        if isinstance(mats[0], StreamedMatrix):
            streamed += 1
            assert np.array_equal(np.asarray(mats[0]), dense[0]), name
        a = analyse_matrices(mats, task.kind, task.eps, task.options)
        b = analyse_matrices(dense, task.kind, task.eps, task.options)
        assert a.status == b.status == "ok", name
        assert np.array_equal(a.spectrum.evals, b.spectrum.evals), name
        assert a.metrics.keys() == b.metrics.keys()
        for key, value in b.metrics.items():
            assert a.metrics[key] == value or (value != value and a.metrics[key] != a.metrics[key]), (name, key)
        assert np.array_equal(a.row_hashes, b.row_hashes), name
    # every projection, the LM head and the memory-mapped embedding table stream
    assert streamed == len(tasks) == 2 * 9


def test_metrics_that_need_the_whole_matrix_read_it_whole(tmp_path: Path) -> None:
    path = write_decoder(tmp_path / "m", DecoderConfig(layers=1))
    for options in (AuditOptions(workers=1), AuditOptions(fast=True, vectors=True, workers=1)):
        for task in prepare(str(path), options).tasks:
            assert all(isinstance(m, np.ndarray) for m in task.matrices()), task.name


def _peak_bytes(task: scheduler.LayerTask) -> tuple[int, scheduler.LayerOutcome]:
    tracemalloc.start()
    try:
        outcome = scheduler.run_task(task)
        return tracemalloc.get_traced_memory()[1], outcome
    finally:
        tracemalloc.stop()


def test_streamed_lm_head_stays_under_one_dense_copy(tmp_path: Path, monkeypatch) -> None:
    # a 32000 x 1024 int4 LM head: 131 MB dequantized to float32, 16 MB as stored codes
    cfg = DecoderConfig(layers=1, hidden=1024, intermediate=1024, vocab=32000, heads=8, kv_heads=8, weights="codes")
    task = _tasks(write_decoder(tmp_path / "m", cfg))["lm_head"]
    dense_bytes = 32000 * 1024 * 4
    streamed_peak, streamed = _peak_bytes(task)
    monkeypatch.setattr(LayerSpec, "streamed", lambda self: None)  # the eager path: dequantized whole
    eager_peak, eager = _peak_bytes(task)
    assert streamed.analysis is not None and eager.analysis is not None
    assert np.array_equal(streamed.analysis.spectrum.evals, eager.analysis.spectrum.evals)
    assert eager_peak > dense_bytes, eager_peak
    assert streamed_peak < 0.6 * dense_bytes, (streamed_peak, eager_peak)
