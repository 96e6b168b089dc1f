"""Output formats, each one small module behind the same interface: render(result, context) -> bytes.

Writers never compute metrics; they format an AuditResult. Every file is written atomically
(temp file in the target folder, then rename), so a failure never leaves a half-written report.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote
from dataclasses import dataclass, field
from typing import Any, Callable

from wwaudit.records import AuditResult
from wwaudit.errors import OutputError, UsageError


@dataclass
class RenderContext:
    """Facts about the run that belong in reports but not in the metrics (command line, date...)."""

    command: str = ""
    generated: str = ""
    page_size: str = "A4"
    plots: str = "findings"
    # --plots findings draws at most this many layers, the most severe first (0: no limit)
    max_plots: int = 12
    extra: dict[str, Any] = field(default_factory=dict)


Renderer = Callable[[AuditResult, RenderContext], bytes]


def _lazy(module: str) -> Renderer:
    """A renderer that imports its format module on first use: `--help` and JSON-only runs never
    pay for weasyprint or matplotlib. Each module under formats/ exposes render(result, ctx)."""

    def render(result: AuditResult, ctx: RenderContext) -> bytes:
        return importlib.import_module(f"wwaudit.formats.{module}").render(result, ctx)

    render.__name__ = "render_" + module.replace(".", "_")
    return render


_MODULES = {
    "json": "json_format",
    "csv": "csv_format",
    "html": "report.html",
    "pdf": "report.pdf",
    "sarif": "sarif_format",
    "junit": "junit_format",
    "markdown": "markdown_format",
    "github": "github_format",
    "attestation": "attestation",
}
FORMATS: dict[str, Renderer] = {name: _lazy(module) for name, module in _MODULES.items()}


def module_of(renderer: Renderer) -> str:
    """The module under formats/ behind one of FORMATS' renderers (render_process renders it by name
    in its child, where the renderer object itself does not travel)."""
    for name, known in FORMATS.items():
        if known is renderer:
            return _MODULES[name]
    raise ValueError(f"{renderer!r} is not one of the formats' renderers")


REPORT_FORMATS: dict[str, Renderer] = {".html": FORMATS["html"], ".htm": FORMATS["html"], ".pdf": FORMATS["pdf"]}


def artifact_uri(model_path: str, root: str | None = None) -> str:
    """The model as CI tools locate it: a path relative to `root` (default: the working directory,
    the repository root in CI), with '/' separators; a file:// URI when it lies outside `root`;
    an object-store URL (s3://...) as it is."""
    if "://" in model_path:
        return model_path
    absolute = os.path.abspath(model_path)
    rel = os.path.relpath(absolute, os.path.abspath(root or os.getcwd()))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return Path(absolute).as_uri()
    return quote(Path(rel).as_posix(), safe="/")


def report_renderer(path: str) -> Renderer:
    """The report renderer for a path's extension (.html or .pdf)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in REPORT_FORMATS:
        raise UsageError(f"--report {path}: unknown report extension '{ext}' (use .html or .pdf)")
    return REPORT_FORMATS[ext]


def check_outputs(outputs: list[tuple[str, Renderer]]) -> None:
    """Before any analysis: at most one output on stdout, and every file target writable."""
    if sum(1 for path, _ in outputs if path == "-") > 1:
        raise UsageError("only one output can go to stdout ('-')")
    for path, _ in outputs:
        check_writable(path)


def check_writable(path: str) -> None:
    """Fail before the analysis (not after minutes of it) when an output cannot be written."""
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory")
    if _special(path):
        return  # a device or FIFO (/dev/stdout): written in place, no temp file needed
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: folder {folder} is not writable")
    # os.access says yes to root on a read-only file system: create and remove a probe file.
    try:
        fd, probe = tempfile.mkstemp(prefix=".wwaudit-", suffix=".probe", dir=folder)
    except OSError as exc:
        raise OutputError(f"{path}: folder {folder} is not writable ({_refusal(exc)})") from None
    os.close(fd)
    _remove(probe)


def _refusal(exc: OSError) -> str:
    """Why a folder refused a new file, in words: a pseudo file system such as /proc answers
    ENOENT ("No such file or directory") for a folder that plainly exists, which misleads."""
    import errno

    return {
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
    }.get(exc.errno or 0, "the file system does not accept new files here")


def _special(path: str) -> bool:
    """An existing target that is not a regular file: renaming over it would replace a device
    node such as /dev/null with a plain file, so it is written in place instead."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` via a temp file and rename; '-' means stdout."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    if _special(path):
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {exc.strerror}") from None
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".wwaudit-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"{path}: cannot write: {exc.strerror}") from None
    except BaseException:
        _remove(tmp)
        raise


class StagedOutputs:
    """Every output of a run, rendered and written to temp files first, put in place together.

    `--timeout` bounds the whole run, outputs included: each output goes to a temp file beside
    its target as soon as it is rendered, and only `commit` (after the last one, within the
    deadline) renames them into place and writes stdout. `discard` (a timeout, any error, the
    watchdog's kill) removes the temp files and whatever `commit` already placed, so a stopped
    run leaves no output at all, not even the ones finished before the limit struck.
    """

    def __init__(self) -> None:
        self._temps: list[tuple[str, str]] = []  # (temp file, target)
        self._in_place: list[tuple[str, bytes]] = []  # devices, FIFOs and '-' (stdout)
        self._placed: list[str] = []
        self._folders: list[str] = []  # folders created for outputs (--plots-dir), removed on discard when empty

    def add_folder(self, path: str) -> None:
        """Create an output folder (and its missing parents) now, so its files can be staged in it;
        `discard` removes what it created, so a stopped run does not leave an empty folder behind."""
        missing = []
        head = os.path.abspath(path)
        while head and not os.path.exists(head):
            missing.append(head)
            head = os.path.dirname(head)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the folder: {exc.strerror}") from None
        self._folders.extend(missing)  # deepest first: the order rmdir needs

    def add(self, path: str, data: bytes) -> None:
        """Write one rendered output to a temp file in its target's folder (or keep it for stdout)."""
        if path == "-" or _special(path):
            self._in_place.append((path, data))
            return
        folder = os.path.dirname(os.path.abspath(path))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".wwaudit-", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {exc.strerror}") from None
        self._temps.append((tmp, path))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {exc.strerror}") from None

    def commit(self) -> None:
        """Rename every temp file onto its target, then write the in-place outputs."""
        for tmp, path in self._temps:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise OutputError(f"{path}: cannot write: {exc.strerror}") from None
            self._placed.append(path)
        self._temps = []
        for path, data in self._in_place:
            write_atomic(path, data)
        self._in_place = []

    def discard(self) -> None:
        """Remove the temp files and any output already placed (safe to call from another thread)."""
        for tmp, _ in list(self._temps):
            _remove(tmp)
        for path in list(self._placed):
            _remove(path)
        for folder in list(self._folders):
            try:
                os.rmdir(folder)  # only when empty: never a file that this run did not write
            except OSError:
                pass
        self._temps, self._placed, self._in_place, self._folders = [], [], [], []


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
