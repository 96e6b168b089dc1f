"""Dask cluster execution (--cluster): a real LocalCluster of worker processes, started here.

Byte-identical output to a local run, progress fed by the futures, a worker killed mid-task has
its layer retried, a task that kills every worker ends the run with one line, an unreachable
scheduler and a missing `distributed` are one line and exit 2, and --timeout still holds.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from chain_models import matmul_chain

from wwaudit.cli.main import main
from wwaudit.engine import limits
from wwaudit.engine.core import audit
from wwaudit.errors import ResourceLimitError
from wwaudit.formats import FORMATS
from wwaudit.options import AuditOptions

distributed = pytest.importorskip("distributed")

from wwaudit.engine.cluster import ClusterError, DaskExecutor  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SHAPES = [(96, 64), (64, 256), (256, 48), (48, 160), (160, 32)]


def _chain(path: Path, external: bool) -> Path:
    """The cluster tests' model: five heavy-tailed MatMul layers, inline or in external data."""
    return matmul_chain(path, 11, SHAPES, external)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two single-threaded worker processes; a task may kill one worker and be retried, not two."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        local = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
        )
    client = distributed.Client(local, set_as_default=False)
    yield client
    client.close()
    local.close()


def _json(result: Any) -> bytes:
    return FORMATS["json"](result, None)


def _models(tmp_path: Path) -> list[Path]:
    return [*sorted(SAMPLES.glob("*.onnx")), _chain(tmp_path / "inline.onnx", False), _chain(tmp_path / "ext.onnx", True)]


def test_cluster_output_is_byte_identical_on_every_test_model(cluster: Any, tmp_path: Path) -> None:
    executor = DaskExecutor(cluster)
    for model in _models(tmp_path):
        local = audit(str(model), AuditOptions(workers=1))
        remote = audit(str(model), AuditOptions(workers=1), executor=executor)
        assert _json(remote) == _json(local), model.name
    assert executor._submitted > 10  # the layers really went to the cluster


def test_cli_cluster_address_and_local_cluster_match_the_local_run(cluster: Any, tmp_path: Path) -> None:
    model = _chain(tmp_path / "ext.onnx", True)
    outs = {}
    for label, extra in (
        ("local", ["--workers", "1"]),
        ("address", ["--cluster", cluster.scheduler.address]),
        ("spawned", ["--cluster", "local:1"]),
    ):
        out = tmp_path / f"{label}.json"
        assert main([str(model), "--json", str(out), "--quiet", *extra]) == 0
        outs[label] = out.read_bytes()
    assert outs["address"] == outs["local"]
    assert outs["spawned"] == outs["local"]


class _Recorder:
    """A progress display that records what the scheduler tells it, and whether each layer was done then."""

    def __init__(self) -> None:
        self.total = 0
        self.names: list[str] = []

    def start(self, total: int, work: float | None = None) -> None:
        self.total = total

    def advance(self, name: str, work: float = 1.0) -> None:
        self.names.append(name)

    def finish(self) -> None:
        pass


def test_progress_follows_the_futures(cluster: Any, tmp_path: Path) -> None:
    progress = _Recorder()
    result = audit(str(_chain(tmp_path / "m.onnx", False)), AuditOptions(), progress, executor=DaskExecutor(cluster))
    assert progress.total == len(SHAPES)
    assert sorted(progress.names) == sorted(layer.name for layer in result.layers if layer.analysed)


def _die_on_first_try(marker_dir: str, victim: int, fn: Callable[..., Any], task: Any) -> Any:
    """Runs on a worker: the victim layer's first try kills its worker process (SIGKILL, mid-task)."""
    marker = Path(marker_dir) / f"tried-{task.index}"
    if task.index == victim and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return fn(task)


class _Sabotage:
    """An executor that sends every task through `wrapper` on the real cluster."""

    def __init__(self, inner: DaskExecutor, wrapper: Callable[..., Any], *extra: Any) -> None:
        self.inner, self.wrapper, self.extra = inner, wrapper, extra

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        return self.inner.submit(self.wrapper, *self.extra, fn, *args)


def test_a_worker_killed_mid_task_has_its_layer_retried(cluster: Any, tmp_path: Path) -> None:
    model = str(_chain(tmp_path / "m.onnx", True))
    before = set(cluster.run(os.getpid).values())
    result = audit(model, AuditOptions(), executor=_Sabotage(DaskExecutor(cluster), _die_on_first_try, str(tmp_path), 2))
    killed = int((tmp_path / "tried-2").read_text())
    assert killed in before  # one of the cluster's workers really ran the layer, and died
    cluster.wait_for_workers(2, timeout=60)
    assert killed not in set(cluster.run(os.getpid).values())  # the nanny replaced it
    assert _json(result) == _json(audit(model, AuditOptions()))  # the layer was retried: nothing lost


def _always_die(fn: Callable[..., Any], task: Any) -> Any:
    if task.index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return fn(task)


def test_a_layer_that_kills_every_worker_ends_the_run_with_one_line(cluster: Any, tmp_path: Path) -> None:
    model = str(_chain(tmp_path / "m.onnx", False))
    with pytest.raises(ClusterError, match=r"died on every try while layer 'fc\d' was on them"):
        audit(model, AuditOptions(), executor=_Sabotage(DaskExecutor(cluster), _always_die))
    cluster.wait_for_workers(2, timeout=60)


def _slow(fn: Callable[..., Any], task: Any) -> Any:
    time.sleep(1.5)
    return fn(task)


def test_timeout_holds_on_a_cluster(cluster: Any, tmp_path: Path) -> None:
    recorder = _Recorder()
    progress = limits.GuardedProgress(recorder, limits.Deadline(1.0))
    with pytest.raises(ResourceLimitError, match="--timeout"):
        audit(str(_chain(tmp_path / "m.onnx", False)), AuditOptions(), progress, executor=_Sabotage(DaskExecutor(cluster), _slow))
    # stopped at the first layer that came back past the deadline (each takes 1.5 s), not after all five
    assert recorder.total == len(SHAPES) and len(recorder.names) == 1


def test_cli_timeout_with_a_cluster_writes_nothing(cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "a.json"
    model = str(SAMPLES / "digits_cnn_good.onnx")
    assert main([model, "--json", str(out), "--cluster", cluster.scheduler.address, "--timeout", "0.001"]) == 2
    assert "--timeout" in capsys.readouterr().err
    assert not out.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = str(SAMPLES / "digits_mlp_good.onnx")
    t0 = time.monotonic()
    code = main([model, "--cluster", f"tcp://127.0.0.1:{_free_port()}", "--connect-timeout", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert time.monotonic() - t0 < 15
    assert err.count("\n") == 1 and "cannot reach the Dask scheduler within 1 s" in err


@pytest.mark.parametrize(
    "value, message",
    [("local:0", "positive number of workers"), ("localhost:8786", "scheduler address"), ("tcp://h", "scheduler address")],
)
def test_bad_cluster_values_are_usage_errors(value: str, message: str, capsys: pytest.CaptureFixture) -> None:
    assert main([str(SAMPLES / "digits_mlp_good.onnx"), "--cluster", value, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_without_distributed_cluster_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main([str(SAMPLES / "digits_mlp_good.onnx"), "--cluster", "local:2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'wwaudit[cluster]'" in err


def test_several_models_on_a_cluster_match_the_local_run(cluster: Any, tmp_path: Path) -> None:
    from wwaudit.engine.scheduler import SilentProgress
    from wwaudit.engine.zoo import audit_many

    paths = [str(p) for p in _models(tmp_path)] + [str(tmp_path / "missing.onnx")]
    local = audit_many(paths, AuditOptions(workers=1), SilentProgress())
    remote = audit_many(paths, AuditOptions(workers=1), SilentProgress(), DaskExecutor(cluster))
    assert [e.verdict for e in remote] == [e.verdict for e in local] and remote[-1].verdict == "error"
    assert [_json(e.result) for e in remote[:-1]] == [_json(e.result) for e in local[:-1]]


@pytest.mark.slow
def test_dask_scheduler_and_worker_started_as_the_readme_says(tmp_path: Path) -> None:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, the model's folder seen by both."""
    import subprocess

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    dask = [sys.executable, "-m", "dask"]
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [*dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
        model = _chain(tmp_path / "ext.onnx", True)
        outs = []
        for extra in (["--workers", "1"], ["--cluster", address]):
            out = tmp_path / f"{len(outs)}.json"
            assert main([str(model), "--json", str(out), "--quiet", *extra]) == 0
            outs.append(out.read_bytes())
        assert outs[0] == outs[1]
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=60)
