"""Hostile safetensors, GGUF and pickle inputs: one line on stderr, exit 2, no traceback.

In the style of test_hostile.py: each case is a small crafted file in its own folder, audited
through the CLI in a subprocess, and `describe` must refuse it the same way (it opens the file
through the same source). Covered: truncated headers, a header larger than the file, tensor
offsets past the end, dtype and shape that disagree with the byte count, overlapping tensors,
shards escaping the folder, an index naming a tensor its shard lacks, and pickle checkpoints.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import source_models as sm

REPO = Path(__file__).resolve().parents[1]


def _safetensors(header: dict, data: bytes, declared: int | None = None) -> bytes:
    blob = json.dumps(header).encode()
    return (len(blob) if declared is None else declared).to_bytes(8, "little") + blob + data


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


W = np.arange(64 * 16, dtype=np.float32).tobytes()
GOOD = {"w.weight": _entry("F32", [64, 16], 0, len(W))}


def _gguf(tmp: Path) -> bytes:
    return sm.save_gguf(sm.net(), tmp / "source.gguf", "Q8_0").read_bytes()


def _gguf_offset_past_end(tmp: Path) -> bytes:
    data = _gguf(tmp)
    return data[: len(data) - 4096]  # the last tensors' bytes are gone


def _gguf_truncated_header(tmp: Path) -> bytes:
    return _gguf(tmp)[:40]


def _gguf_huge_count(tmp: Path) -> bytes:
    data = bytearray(_gguf(tmp))
    data[8:16] = struct.pack("<Q", 1 << 60)  # tensor count
    return bytes(data)


def _pickle(tmp: Path) -> bytes:
    return pickle.dumps({"w": [1.0, 2.0]}, protocol=4)


def _torch_zip(tmp: Path) -> bytes:
    path = tmp / "zip.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
    return path.read_bytes()


CASES: dict[str, tuple[str, Callable[[Path], bytes], str]] = {
    "st_empty": ("model.safetensors", lambda t: b"", "truncated safetensors file"),
    "st_truncated_length": ("model.safetensors", lambda t: b"\x10\x00\x00", "truncated safetensors file"),
    "st_header_larger_than_file": (
        "model.safetensors",
        lambda t: _safetensors(GOOD, W, declared=1 << 40),
        "larger than the file",
    ),
    "st_truncated_header": ("model.safetensors", lambda t: _safetensors(GOOD, W)[:40], "larger than the file"),
    "st_not_json": ("model.safetensors", lambda t: (5).to_bytes(8, "little") + b'{"a":' + W, "not valid json"),
    "st_offset_past_end": ("model.safetensors", lambda t: _safetensors(GOOD, W[:1024]), "beyond the end"),
    "st_dtype_shape_disagree": (
        "model.safetensors",
        lambda t: _safetensors({"w.weight": _entry("F16", [64, 16], 0, len(W))}, W),
        "need 2048",
    ),
    "st_unknown_dtype": (
        "model.safetensors",
        lambda t: _safetensors({"w.weight": _entry("F128", [4], 0, 64)}, W),
        "unknown dtype",
    ),
    "st_negative_shape": (
        "model.safetensors",
        lambda t: _safetensors({"w.weight": _entry("F32", [-4, 4], 0, 64)}, W),
        "invalid shape",
    ),
    "st_overlap": (
        "model.safetensors",
        lambda t: _safetensors({"a.weight": _entry("F32", [16, 16], 0, 1024), "b.weight": _entry("F32", [16, 16], 512, 1536)}, W),
        "overlap",
    ),
    "gguf_truncated_header": ("model.gguf", _gguf_truncated_header, "not a readable gguf file"),
    "gguf_offset_past_end": ("model.gguf", _gguf_offset_past_end, "its header disagrees with the bytes present"),
    "gguf_huge_tensor_count": ("model.gguf", _gguf_huge_count, "not a readable gguf file"),
    "pickle_bin": ("pytorch_model.bin", _pickle, "unpickling executes code"),
    "torch_zip_pt": ("model.pt", _torch_zip, "zip archive of pickles"),
    "pickle_ckpt": ("last.ckpt", _pickle, "python pickle"),
}


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "wwaudit", *argv], capture_output=True, text=True, env=env, timeout=120)


def _check_refused(proc: subprocess.CompletedProcess, message: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("wwaudit: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert message in lines[0].lower(), lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    name, build, message = CASES[case]
    if name.endswith(".gguf"):
        pytest.importorskip("gguf")
    path = tmp_path / name
    path.write_bytes(build(tmp_path))
    _check_refused(_run(str(path), "-q", "--fast", "--workers", "1"), message)
    _check_refused(_run("describe", str(path)), message)


def _sharded(tmp: Path) -> Path:
    return sm.save_sharded(sm.net(), tmp / "model")


def test_shard_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    folder = _sharded(tmp_path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    (tmp_path / "outside.safetensors").write_bytes((folder / "model-00001-of-00002.safetensors").read_bytes())
    index["weight_map"] = {name: "../outside.safetensors" for name in index["weight_map"]}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    _check_refused(_run("describe", str(folder)), "climbs out of the model's folder")


def test_shard_through_symlink_is_refused(tmp_path: Path) -> None:
    folder = _sharded(tmp_path)
    shard = folder / "model-00002-of-00002.safetensors"
    os.replace(shard, tmp_path / "elsewhere.safetensors")
    shard.symlink_to(tmp_path / "elsewhere.safetensors")
    _check_refused(_run("describe", str(folder)), "symbolic link")


def test_index_naming_a_tensor_its_shard_lacks_is_refused(tmp_path: Path) -> None:
    folder = _sharded(tmp_path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    _check_refused(_run("describe", str(folder)), "ghost.weight")


def test_onnx_named_bin_is_still_audited(tmp_path: Path) -> None:
    """The content decides, not the extension: an ONNX model saved as .bin is no pickle."""
    path = sm.save_onnx(sm.net(), tmp_path / "model.onnx")
    os.replace(path, tmp_path / "model.bin")
    proc = _run("describe", str(tmp_path / "model.bin"))
    assert proc.returncode == 0 and "(onnx)" in proc.stdout, proc.stderr


def test_symlinked_config_is_not_followed(tmp_path: Path) -> None:
    """config.json only hints at layouts: a symbolic link there is not followed, and the audit says so."""
    from wwaudit.engine.core import audit
    from wwaudit.options import AuditOptions

    folder = _sharded(tmp_path)
    (tmp_path / "elsewhere.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["Leaked"]}))
    (folder / "config.json").symlink_to(tmp_path / "elsewhere.json")
    result = audit(str(folder), AuditOptions(workers=1, fast=True))
    assert result.model.graph_name == ""
    assert any("config.json beside the weights not used" in f.message and "symbolic link" in f.message for f in result.findings)
