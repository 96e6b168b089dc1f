"""Time and memory limits, so a hostile or simply huge model cannot hang or exhaust a CI runner.

Memory (`--max-memory`, default 8 GiB): before a layer's tensor is read, its working set is
estimated from the declared shape and dtype alone (see working_set_bytes: the values in memory,
one shuffled slice for the traps, a Gram chunk, the M x M Gram matrix and eigensolver workspace). A layer above the limit is skipped with that
reason, before anything is allocated; the rest of the model is audited. The limit applies to
each layer task: with several workers, up to `workers` layers are in memory at once.

Time (`--timeout`, default 3600 s) bounds the whole run: loading, walking, analysis and every
output. The deadline is checked at each phase boundary, between layers and between outputs;
past it the run stops with exit 2 and leaves no output. Anything still running `hard_grace`
seconds after the deadline (a single eigensolve, a PDF layout) is cut off by a watchdog that
removes the staged outputs and ends the process (and the worker processes it started) with
exit 2: outputs go to temp files and are renamed into place only at the very end.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from wwaudit.errors import EXIT_ERROR, ResourceLimitError, UsageError
from wwaudit.options import DEFAULT_MAX_MEMORY  # noqa: F401  (re-exported: the limits' default)

# Gram matrix + eigensolver workspace: about three M x M float64 arrays at the peak.
GRAM_COPIES = 3
# Python bookkeeping of one matrix slice (array objects, its eigenvalue array): conv layers with
# millions of kernel positions are bounded by this, not by their few bytes of data.
SLICE_OVERHEAD = 1024
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5GiB', '1000000' -> bytes (binary units; '0' is refused: no limit is 'none')."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise UsageError(f"--max-memory: '{text}' is not a size (examples: 8G, 512M, 1.5GiB)")
    value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise UsageError("--max-memory must be positive")
    return value


def parse_timeout(text: str) -> float | None:
    """Seconds (or '30m', '2h'); '0' or 'none' means no time limit."""
    lowered = text.strip().lower()
    if lowered in ("0", "none", "off"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", lowered)
    if not match:
        raise UsageError(f"--timeout: '{text}' is not a duration (examples: 600, 30m, 2h, none)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def format_bytes(n: float) -> str:
    """1.5 GiB, 300.0 MiB: for messages."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def working_set_bytes(elements: int, N: int, M: int, value_itemsize: int, in_memory: bool, traps: bool, slices: int = 1) -> int:
    """Estimated peak bytes of analysing one layer, as the streaming scheduler does it.

    The tensor is read in its own dtype (float16/32/64; other formats widen to float32): external
    data is memory-mapped (page cache, reclaimable: not counted), in-file or dequantized data is a
    real copy. The Gram matrix is accumulated from float64 row chunks of at most
    spectra.GRAM_CHUNK_ELEMENTS; the shuffled copy for correlation traps is one slice at a time;
    the eigensolver needs about GRAM_COPIES M x M float64 arrays. No step widens the whole tensor
    to float64, so a 250k x 4k external embedding table needs its Gram work and one shuffled
    slice, not 8 bytes per element. A conv with many kernel positions also pays per slice (array
    objects and per-slice eigenvalues, SLICE_OVERHEAD) and the power-law fit pays for all its
    M x slices eigenvalues (powerlaw_fit.fit_working_bytes): 10⁶ positions cost about 1 GiB.
    """
    from wwaudit.spectral.powerlaw_fit import fit_working_bytes
    from wwaudit.spectral.spectra import GRAM_CHUNK_ELEMENTS

    values = value_itemsize * elements if in_memory else 0
    shuffled = value_itemsize * N * M if traps else 0
    per_slice = slices * SLICE_OVERHEAD if slices > 1 else 0
    fit = fit_working_bytes(M * max(slices, 1))
    return values + shuffled + per_slice + fit + 8 * min(elements, GRAM_CHUNK_ELEMENTS) + GRAM_COPIES * 8 * M * M


def memory_refusal(need: int, max_memory: int | None) -> str | None:
    """The skip reason when a layer's working set `need` (working_set_bytes) exceeds `max_memory`."""
    if max_memory is None or need <= max_memory:
        return None
    return f"needs about {format_bytes(need)} of working memory, above --max-memory {format_bytes(max_memory)}"


class Deadline:
    """A wall-clock limit checked at safe points (phase boundaries, between layers)."""

    def __init__(self, seconds: float | None, clock: Any = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    @property
    def expired(self) -> bool:
        return self._end is not None and self._clock() >= self._end

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - self._clock())

    def check(self, where: str) -> None:
        """Raise ResourceLimitError when the deadline has passed (exit 2, nothing written)."""
        if self.expired:
            raise ResourceLimitError(
                f"time limit of {self.seconds:g} s (--timeout) exceeded {where}: audit stopped, no output written"
            )

    @property
    def hard_grace(self) -> float:
        """Extra time a running layer gets before the watchdog ends the process: 10%, 5-60 s."""
        return min(60.0, max(5.0, 0.1 * (self.seconds or 0.0)))


class GuardedProgress:
    """A progress display that also checks the deadline at every step the scheduler reports.

    The scheduler calls `start` after loading and planning and `advance` as each layer finishes,
    in the calling thread: exactly the safe points where stopping leaves nothing half done.
    """

    def __init__(self, inner: Any, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def start(self, total: int, work: float | None = None) -> None:
        self._deadline.check("while loading the model")
        self._inner.start(total, work)

    def advance(self, name: str, work: float = 1.0) -> None:
        self._inner.advance(name, work)
        self._deadline.check(f"after layer '{name}'")

    def finish(self) -> None:
        self._inner.finish()


def _hard_stop(deadline: Deadline, cleanup: Callable[[], None] | None = None) -> None:
    """Watchdog action: remove staged outputs, one line on stderr, end our workers, exit 2 at once."""
    try:
        if cleanup is not None:
            cleanup()
        sys.stderr.write(
            f"wwaudit: error: time limit of {deadline.seconds:g} s (--timeout) exceeded and a layer did not "
            f"finish within {deadline.hard_grace:g} s more: audit killed, no output written\n"
        )
        sys.stderr.flush()
        for child in multiprocessing.active_children():
            child.kill()
    finally:
        os._exit(EXIT_ERROR)


@contextmanager
def watchdog(deadline: Deadline, cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """Hard stop for the whole run: ends the process if it overruns the deadline plus grace.

    Loading, analysis and the rendering of every output run under it (a PDF of a crafted model
    can take longer than its analysis). Outputs are staged in temp files (formats.StagedOutputs);
    `cleanup` removes them, and any already put in place, before the process ends.
    """
    remaining = deadline.remaining()
    if remaining is None:
        yield
        return
    timer = threading.Timer(remaining + deadline.hard_grace, _hard_stop, args=(deadline, cleanup))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
