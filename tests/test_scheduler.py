"""Layer scheduler: parallel runs give the same bytes, tall matrices stream, external data is read
lazily one layer at a time, size gates are explicit, and the torch/float32 paths agree with numpy."""

from __future__ import annotations

import gc
import json
import tracemalloc
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from wwaudit.engine import scheduler
from wwaudit.spectral import spectra
from wwaudit.engine.core import audit
from wwaudit.options import AuditOptions
from wwaudit.cli.main import main


def _heavy_tailed(rng: np.random.Generator, rows: int, cols: int, dtype: type = np.float32) -> np.ndarray:
    """Gaussian entries with Pareto row/column scales: a power-law-like ESD tail, not pure noise."""
    z = rng.standard_normal((rows, cols))
    return (z * (1 + rng.pareto(3.0, (rows, 1))) * (1 + rng.pareto(3.0, (1, cols))) / np.sqrt(rows)).astype(dtype)


def _chain(path: Path, shapes: list[tuple[int, int]], dtype: type = np.float32, external: bool = False) -> Path:
    """A MatMul chain x·W1·W2… with [in, out] weights, optionally with all data in one external file."""
    rng = np.random.default_rng(7)
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    nodes, inits, prev = [], [], "x"
    for i, (n_in, n_out) in enumerate(shapes):
        inits.append(numpy_helper.from_array(_heavy_tailed(rng, n_in, n_out, dtype), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"fc{i}"))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", elem, [1, shapes[0][0]])],
        [helper.make_tensor_value_info(prev, elem, [1, shapes[-1][1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save(
            model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=0
        )
    else:
        onnx.save(model, path)
    return path


SHAPES = [(96, 64), (64, 256), (256, 48), (48, 160), (160, 32), (32, 200)]


def test_workers_give_identical_json_in_layer_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _chain(tmp_path / "m.onnx", SHAPES)
    pools: list[int] = []
    real_make = scheduler.make_executor

    def recording_make(workers: int, device: str = "cpu"):
        pools.append(workers)
        return real_make(workers, device)

    monkeypatch.setattr(scheduler, "PARALLEL_MIN_COST", 0)  # this tiny model would otherwise run serially
    monkeypatch.setattr(scheduler, "make_executor", recording_make)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.json"
        assert main([str(model), "--json", str(out), "--quiet", "--workers", str(workers)]) == 0
        outs.append(out.read_bytes())
    assert pools == [2]  # workers=2 really ran in a pool of worker processes
    assert outs[0] == outs[1]
    doc = json.loads(outs[0])
    assert [layer["name"] for layer in doc["layers"]] == [f"fc{i}" for i in range(len(SHAPES))]
    assert [layer["id"] for layer in doc["layers"]] == list(range(len(SHAPES)))
    assert "workers" not in doc["options"]  # execution-only: must not make the bytes differ
    assert all(layer["num_evals"] == min(shape) for layer, shape in zip(doc["layers"], SHAPES))


def test_pluggable_executor_runs_every_task_largest_first(tmp_path: Path) -> None:
    """Any concurrent.futures-style executor runs the same tasks; results come back in layer order."""
    model = _chain(tmp_path / "m.onnx", SHAPES)

    class Recording(ThreadPoolExecutor):
        def __init__(self) -> None:
            super().__init__(max_workers=2)
            self.costs: list[float] = []

        def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
            self.costs.append(args[0].cost)
            return super().submit(fn, *args, **kwargs)

    with Recording() as pool:
        result = audit(str(model), AuditOptions(), executor=pool)
    serial = audit(str(model), AuditOptions())
    assert len(pool.costs) == len(SHAPES)
    assert pool.costs == sorted(pool.costs, reverse=True)
    assert [layer.id for layer in result.layers] == list(range(len(SHAPES)))
    for a, b in zip(result.layers, serial.layers):
        assert a.metrics == b.metrics
        np.testing.assert_array_equal(a.evals, b.evals)


def test_tall_matrix_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An embedding-shaped memory map gives the direct eigenvalues without a float64 copy of it."""
    rows, cols = 20000, 48
    data = _heavy_tailed(np.random.default_rng(3), rows, cols)
    store = np.memmap(tmp_path / "emb.bin", dtype=np.float32, mode="w+", shape=(rows, cols))
    store[:] = data
    store.flush()
    table = np.memmap(tmp_path / "emb.bin", dtype=np.float32, mode="r", shape=(rows, cols))
    monkeypatch.setattr(spectra, "GRAM_CHUNK_ELEMENTS", 1000 * cols)  # 20 chunks
    tracemalloc.start()
    evals = spectra.singular_values_squared(table, float(np.finfo(np.float32).eps))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    direct = np.sort(np.linalg.svd(data.astype(np.float64), compute_uv=False) ** 2)
    np.testing.assert_allclose(evals, direct, rtol=1e-9)
    assert peak < rows * cols * 8 / 8  # far below one float64 copy of the table
    # the transposed (hidden x vocab) view streams the same way
    np.testing.assert_allclose(spectra.singular_values_squared(table.T, 1e-7), direct, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_external_data_is_read_lazily_one_layer_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:
    model = _chain(tmp_path / "ext.onnx", SHAPES[:4], dtype=dtype, external=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 0
    seen: list[weakref.ref] = []
    real = scheduler.analyse_matrices

    def spy(mats, kind, eps, options):
        gc.collect()
        assert all(ref() is None for ref in seen), "an earlier layer's matrices are still alive"
        for m in mats:
            assert m.dtype == np.dtype(dtype)  # stored dtype, not a float64 copy
            assert not m.flags.writeable  # a read-only view of the memory-mapped file
            seen.append(weakref.ref(m))
        return real(mats, kind, eps, options)

    monkeypatch.setattr(scheduler, "analyse_matrices", spy)
    result = audit(str(model), AuditOptions(workers=1))
    assert len(seen) == 4
    assert result.model.external_data
    assert [layer.status for layer in result.layers] != [] and all(layer.analysed for layer in result.layers)


def test_max_evals_skips_with_reason_and_nothing_is_gated_silently(tmp_path: Path) -> None:
    model = _chain(tmp_path / "m.onnx", [(96, 64), (64, 300), (300, 20)])
    out = tmp_path / "a.json"
    assert main([str(model), "--json", str(out), "--quiet", "--max-evals", "50", "--workers", "2"]) == 3  # inconclusive
    doc = json.loads(out.read_text())
    assert doc["summary"]["weights_skipped_for_limit"] == 2 and doc["verdict"]["verdict"] == "inconclusive"
    layers = doc["layers"]
    assert [layer["status"] for layer in layers][:2] == ["skipped", "skipped"]
    assert layers[0]["reason"] == "more than --max-evals 50 eigenvalues"
    assert layers[2]["num_evals"] == 20
    assert main([str(model), "--json", str(out), "--quiet"]) == 0
    assert all(layer["num_evals"] is not None for layer in json.loads(out.read_text())["layers"])


def test_torch_backend_on_cpu_agrees_with_numpy() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    mats = [_heavy_tailed(rng, 300, 80), _heavy_tailed(rng, 40, 120).astype(np.float16)]
    eps = float(np.finfo(np.float32).eps)
    ref = spectra.layer_spectrum(mats, eps, AuditOptions())
    torch_cpu = spectra.layer_spectrum(mats, eps, AuditOptions(device="torch-cpu"))
    np.testing.assert_allclose(torch_cpu.evals, ref.evals, rtol=1e-9, atol=1e-12 * ref.evals[-1])
    assert torch_cpu.rank_loss == ref.rank_loss


def test_torch_backend_solves_the_shuffled_copy_in_float32_like_numpy() -> None:
    pytest.importorskip("torch")
    W = _heavy_tailed(np.random.default_rng(6), 500, 120)
    ref = spectra.reference_evals(W)
    torch_cpu = spectra.reference_evals(W, spectra.Backend(device="torch-cpu"))
    exact = spectra.layer_spectrum([W], float(np.finfo(np.float32).eps)).evals
    assert torch_cpu.dtype == np.float64 and torch_cpu.shape == ref.shape
    for evals in (ref, torch_cpu):  # both float32 solves, both within float32 rounding of float64
        assert np.abs(evals - exact).max() <= 1e-5 * exact[-1]


def test_float32_gram_keeps_the_tail_and_exact_rank_counts() -> None:
    rng = np.random.default_rng(11)
    eps = float(np.finfo(np.float32).eps)
    full = _heavy_tailed(rng, 400, 100)
    low_rank = (_heavy_tailed(rng, 400, 10) @ _heavy_tailed(rng, 10, 100)).astype(np.float32)  # rank 10
    for W in (full, low_rank):
        ref = spectra.layer_spectrum([W], eps)
        fast = spectra.layer_spectrum([W], eps, AuditOptions(precision="float32"))
        top = ref.evals[-20:]
        np.testing.assert_allclose(fast.evals[-20:], top, rtol=1e-5)
        assert fast.rank_loss == ref.rank_loss
    assert spectra.layer_spectrum([low_rank], eps, AuditOptions(precision="float32")).rank_loss == 90
    # square weights reach down to 0: they are solved in float64 directly, bit for bit the default
    square = _heavy_tailed(rng, 120, 120)
    np.testing.assert_array_equal(
        spectra.layer_spectrum([square], eps, AuditOptions(precision="float32")).evals,
        spectra.layer_spectrum([square], eps).evals,
    )


def test_unavailable_device_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    model = _chain(tmp_path / "m.onnx", SHAPES[:2])
    assert main([str(model), "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cuda" in err[0]
    assert main([str(model), "--workers", "0", "--quiet"]) == 2


def test_memory_estimate_follows_the_streaming_scheduler() -> None:
    """A 250k x 4k float32 table in external data needs its Gram work and one shuffled copy, not
    a float64 copy of the table (8 GiB): the default --max-memory must not gate it."""
    from wwaudit.engine.limits import DEFAULT_MAX_MEMORY, memory_refusal, working_set_bytes

    n, m = 250_000, 4096
    external = working_set_bytes(n * m, n, m, 4, in_memory=False, traps=True)
    assert memory_refusal(external, DEFAULT_MAX_MEMORY) is None
    assert external < 8 * n * m / 1.5
    # in-file data is a real copy, and traps add one shuffled slice on top
    inline = working_set_bytes(n * m, n, m, 4, in_memory=True, traps=True)
    assert inline - external == 4 * n * m
    assert working_set_bytes(n * m, n, m, 4, True, False) == inline - 4 * n * m
    assert "--max-memory" in (memory_refusal(inline, 1 << 30) or "")
