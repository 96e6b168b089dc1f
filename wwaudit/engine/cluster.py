"""Run the layer tasks on a Dask distributed cluster (`--cluster ADDRESS` or `--cluster local:N`).

Why Dask, and why this thin: the scheduler already runs any concurrent.futures-style executor
(scheduler.LayerExecutor), and Dask's scheduler and workers start from the command line
(`dask scheduler`, `dask worker ADDRESS`) or in-process (LocalCluster), so nothing home-made
has to move tasks between machines. What this module adds is what a command line needs:

- `distributed` is an optional extra (`pip install 'wwaudit[cluster]'`): without it `--cluster`
  is one line and exit 2, and nothing else imports it.
- A scheduler that cannot be reached is one line and exit 2 after a short connect timeout, not
  Dask's default 30 s of retries and a traceback.
- Each task runs with one BLAS thread on the worker (`_pinned`), as in the local worker pool, so
  the numbers, and the JSON, are byte-identical to a local run whatever the cluster.
- A worker that dies mid-task (killed, out of memory, machine lost) has its task rescheduled by
  Dask's scheduler on another worker; only a task that killed `allowed-failures` workers (Dask's
  default 3) ends the run, as one line naming the layer.
- Tasks carry tensor *references*: in-file tensors travel inside the task, external data is read
  by each worker from the same path, so workers must see the model's folder under that path.
"""

from __future__ import annotations

import logging
import re
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

from wwaudit.engine.scheduler import LayerTask
from wwaudit.errors import UsageError, WwauditError

LOCAL_PREFIX = "local:"
# Seconds to reach a scheduler before giving up (Dask's own default is 30 s of retries).
CONNECT_TIMEOUT = 10.0
# Worker settings for the analysis (the same as DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False and
# DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=1s for `dask worker`, see the README).
# Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive
# mmap threshold: every layer's arrays then come from fresh pages. The same BERT-large tasks took
# 15% longer on 2 LocalCluster workers than on the process pool with it, 4% without (idle 2-core
# machine, benchmarks/cluster_scale.py shape); None unsets it (Dask's documented override).
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}
_ADDRESS = re.compile(r"(tcp|tls|ws|wss)://[^\s/]+:\d+")


class ClusterError(WwauditError):
    """The Dask cluster cannot be reached, or lost the run (exit 2, one line)."""


def parse_cluster(text: str) -> int | str:
    """`local:N` -> N (worker processes to start here); a scheduler address -> the address."""
    if text.startswith(LOCAL_PREFIX):
        count = text[len(LOCAL_PREFIX) :]
        if not count.isdigit() or int(count) < 1:
            raise UsageError(f"--cluster {text}: 'local:N' needs a positive number of workers N")
        return int(count)
    if not _ADDRESS.fullmatch(text):
        raise UsageError(f"--cluster {text}: expected a scheduler address such as tcp://host:8786, or local:N")
    return text


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UsageError("--cluster needs Dask distributed: pip install 'wwaudit[cluster]'") from None
    return distributed


_CONTROLLER: Any = None  # this worker's threadpoolctl controller: finding the BLAS libraries costs ~1 ms, once


def _pinned(fn: Callable[..., Any], *args: Any) -> Any:
    """Run one task with one BLAS thread in this worker (determinism, as scheduler._limit_blas_threads).

    Per task, not for the whole worker process: a shared cluster's worker may run other work too."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=1):
        return fn(*args)


class _LayerFuture:
    """A Dask future that answers like a concurrent.futures one, with the cluster's failures as one line."""

    def __init__(self, inner: Any, name: str) -> None:
        self._inner = inner
        self._name = name

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._inner.add_done_callback(lambda _inner: fn(self))

    def result(self) -> Any:
        from concurrent.futures import CancelledError

        from distributed.scheduler import KilledWorker

        try:
            return self._inner.result()
        except KilledWorker:
            raise ClusterError(
                f"Dask workers died on every try while layer '{self._name}' was on them "
                "(distributed.scheduler.allowed-failures); lower --max-memory or give the workers more memory"
            ) from None
        except CancelledError:
            raise ClusterError(f"the Dask cluster lost layer '{self._name}' (scheduler gone or client disconnected)") from None


class DaskExecutor:
    """scheduler.LayerExecutor on a Dask client: earlier submissions get higher priority, so the
    scheduler's largest-first order holds on the cluster too."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> _LayerFuture:
        self._submitted += 1
        future = self.client.submit(_pinned, fn, *args, pure=False, priority=-self._submitted)
        return _LayerFuture(future, next((a.name for a in args if isinstance(a, LayerTask)), "?"))

    @property
    def workers(self) -> int:
        """Workers the scheduler knows now (for the report's reproducibility block)."""
        return len(self.client.nthreads())


def _connect(distributed: Any, address: Any, timeout: float) -> Any:
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ClusterError(f"--cluster {address}: cannot reach the Dask scheduler within {timeout:g} s ({reason})") from None


@contextmanager
def cluster_executor(spec: str, connect_timeout: float = CONNECT_TIMEOUT) -> Iterator[DaskExecutor]:
    """A DaskExecutor on the cluster `spec` names (parse_cluster), closed on exit.

    `local:N` starts a LocalCluster of N single-threaded worker processes here (no dashboard),
    and shuts it down on exit; an address connects to a running scheduler and only disconnects.
    """
    target = parse_cluster(spec)
    distributed = _distributed()
    # Dask logs worker restarts and lost connections as warnings; a failure that matters reaches
    # the user as one line (ClusterError), so its logs stay at errors only.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with ExitStack() as stack:
        if isinstance(target, int):
            import dask

            # Dask's workers sample their own stacks every 10 ms (the dashboard's profile) and tick
            # their event loop every 20 ms: on a loaded machine that slowed the layers' eigen work by
            # a third (benchmarks/cluster_scale.py). A LocalCluster here has no dashboard to feed.
            with dask.config.set(WORKER_CONFIG):
                cluster = distributed.LocalCluster(
                    n_workers=target,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            stack.callback(cluster.close)
            target = cluster.scheduler_address
        client = _connect(distributed, target, connect_timeout)
        stack.callback(client.close)
        yield DaskExecutor(client)
