"""Layouts of real exporters: torch.onnx.export with dynamo on and off, skl2onnx's MLP.

For every module the test knows the (out x in) matrices the method expects from the torch
weights (per group and kernel position for convs, per direction and gate for RNNs, in ONNX's
gate order) and asserts that the analysed layers are exactly those, matrix for matrix: this
checks the set of layers, their shapes, slice counts and orientation (rows = output features)
at once. Every tensor in the file must be accounted for, and the skip reasons must be the right
ones (biases, initial states, depthwise convs).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from wwaudit.ingest.walker import walk
from wwaudit.ingest.plan import LayerSpec, plan_layers
from wwaudit.ingest.loader import load_model

pytestmark = pytest.mark.slow

H = 16  # hidden size of the recurrent cases


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def conv_mats(w: torch.Tensor, groups: int) -> list[np.ndarray]:
    """Conv weight [out, in/g, k...] -> per group, per kernel position (out/g x in/g)."""
    w = _np(w)
    per = w.shape[0] // groups
    flat = w.reshape(w.shape[0], w.shape[1], -1)
    return [flat[g * per : (g + 1) * per, :, p] for g in range(groups) for p in range(flat.shape[2])]


def conv_t_mats(w: torch.Tensor, groups: int) -> list[np.ndarray]:
    """ConvTranspose weight [in, out/g, k...] -> per group, per position (out/g x in/g)."""
    w = _np(w)
    per = w.shape[0] // groups
    flat = w.reshape(w.shape[0], w.shape[1], -1)
    return [flat[g * per : (g + 1) * per, :, p].T for g in range(groups) for p in range(flat.shape[2])]


def rnn_gates(rnn: nn.Module, kind: str) -> dict[str, list[np.ndarray]]:
    """torch gate blocks (LSTM i,f,g,o; GRU r,z,n) renamed to ONNX's suffixes W/R.dir.gate."""
    order = {"LSTM": {"i": 0, "f": 1, "c": 2, "o": 3}, "GRU": {"r": 0, "z": 1, "h": 2}}[kind]
    out = {}
    for which, attr in (("W", "weight_ih_l0"), ("R", "weight_hh_l0")):
        for direction, suffix in (("fwd", ""), ("bwd", "_reverse")):
            w = _np(getattr(rnn, attr + suffix))
            for gate, k in order.items():
                out[f"{which}.{direction}.{gate}"] = [w[k * H : (k + 1) * H]]
    return out


class Linear3D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class BiRNN(nn.Module):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.rnn = cls(12, H, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x))


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(16, 2, batch_first=True)
        # torch starts out_proj.bias at zero and the dynamo optimiser drops a zero bias: train-like values
        nn.init.uniform_(self.att.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.att(x, x, x)[0]


Expect = Callable[[nn.Module], dict[str, tuple[str, list[np.ndarray]]]]
BIAS = "1-D (bias, norm scale or shape vector)"

# name: (module factory, example input, expected layers {label: (op, matrices)}, expected skip reasons
#        {reason prefix: how many tensors}, exporters to test)
CASES: dict[str, tuple] = {
    "linear_2d": (lambda: nn.Linear(16, 24), torch.randn(2, 16), lambda m: {"fc": ("Gemm", [_np(m.weight)])}, {BIAS: 1}),
    "linear_3d": (Linear3D, torch.randn(2, 5, 16), lambda m: {"fc": ("MatMul", [_np(m.fc.weight)])}, {BIAS: 1}),
    "conv1d": (lambda: nn.Conv1d(4, 12, 3), torch.randn(1, 4, 10), lambda m: {"c": ("Conv", conv_mats(m.weight, 1))}, {BIAS: 1}),
    "conv2d": (
        lambda: nn.Conv2d(4, 12, 3),
        torch.randn(1, 4, 8, 8),
        lambda m: {"c": ("Conv", conv_mats(m.weight, 1))},
        {BIAS: 1},
    ),
    "conv3d": (
        lambda: nn.Conv3d(4, 12, 2),
        torch.randn(1, 4, 4, 4, 4),
        lambda m: {"c": ("Conv", conv_mats(m.weight, 1))},
        {BIAS: 1},
    ),
    "conv_grouped": (
        lambda: nn.Conv2d(8, 16, 3, groups=2),
        torch.randn(1, 8, 8, 8),
        lambda m: {"c": ("Conv", conv_mats(m.weight, 2))},
        {BIAS: 1},
    ),
    "conv_depthwise": (
        lambda: nn.Conv2d(8, 8, 3, groups=8),
        torch.randn(1, 8, 8, 8),
        lambda m: {},
        {BIAS: 1, "depthwise conv": 1},
    ),
    "conv_transpose": (
        lambda: nn.ConvTranspose2d(12, 8, 3),
        torch.randn(1, 12, 5, 5),
        lambda m: {"c": ("ConvTranspose", conv_t_mats(m.weight, 1))},
        {BIAS: 1},
    ),
    "conv_transpose_grouped": (
        lambda: nn.ConvTranspose2d(12, 8, 3, groups=2),
        torch.randn(1, 12, 5, 5),
        lambda m: {"c": ("ConvTranspose", conv_t_mats(m.weight, 2))},
        {BIAS: 1},
    ),
    "lstm": (
        lambda: BiRNN(nn.LSTM),
        torch.randn(1, 5, 12),
        lambda m: {k: ("LSTM", v) for k, v in rnn_gates(m.rnn, "LSTM").items()},
        {"not a weight slot: bias B of LSTM": 1, "not a weight slot: initial_h of LSTM|not a weight slot: Expand": 1},
    ),
    "gru": (
        lambda: BiRNN(nn.GRU),
        torch.randn(1, 5, 12),
        lambda m: {k: ("GRU", v) for k, v in rnn_gates(m.rnn, "GRU").items()},
        {"not a weight slot: bias B of GRU": 1, "not a weight slot: initial_h of GRU|not a weight slot: Expand": 1},
    ),
    "embedding": (lambda: nn.Embedding(50, 16), torch.tensor([[1, 2, 3]]), lambda m: {"e": ("Gather", [_np(m.weight)])}, {}),
    "tied_lm_head": (
        TiedLM,
        torch.tensor([[1, 2, 3]]),
        lambda m: {"e": ("Gather", [_np(m.emb.weight)])},
        {"tied copy of": 1},
    ),
    "multihead_attention": (
        SelfAttention,
        torch.randn(1, 5, 16),
        lambda m: {**qkv_parts(m.att), "out_proj": ("Gemm", [_np(m.att.out_proj.weight)])},
        {BIAS: 2},
    ),
}


def qkv_parts(att: nn.MultiheadAttention) -> dict[str, tuple[str, list[np.ndarray]]]:
    """The packed in_proj weight [3E, E] is three layers: Q, K and V, each (E x E), rows = outputs."""
    W, E = _np(att.in_proj_weight), att.embed_dim
    return {part: ("MatMul", [W[i * E : (i + 1) * E]]) for i, part in enumerate("qkv")}


def _export(module: nn.Module, example: torch.Tensor, path: Path, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False)
        else:
            torch.onnx.export(module, (example,), str(path), dynamo=False)


def _plan(path: Path) -> tuple[list[LayerSpec], int]:
    loaded = load_model(str(path))
    walked = walk(loaded.proto, loaded.base_dir)
    return plan_layers(walked), len(walked.tensors)


def _match(specs: list[LayerSpec], expected: dict[str, tuple[str, list[np.ndarray]]]) -> dict[str, LayerSpec]:
    """Pair each expected layer with the analysed spec holding exactly its matrices."""
    analysed = [s for s in specs if not s.skipped]
    found: dict[str, LayerSpec] = {}
    for label, (op, mats) in expected.items():
        hits = [
            s
            for s in analysed
            if s.op == op
            and len(got := s.matrices()) == len(mats)
            and all(g.shape == e.shape and np.array_equal(g, e.astype(np.float64)) for g, e in zip(got, mats))
        ]
        assert len(hits) == 1, f"{label}: {len(hits)} analysed layers hold its matrices"
        found[label] = hits[0]
    assert len(set(map(id, found.values()))) == len(analysed) == len(expected), [s.name for s in analysed]
    return found


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_export_layout(case: str, dynamo: bool, tmp_path: Path) -> None:
    factory, example, expect, skips = CASES[case]
    torch.manual_seed(0)
    module = factory().eval()
    path = tmp_path / f"{case}.onnx"
    _export(module, example, path, dynamo)
    specs, tensor_count = _plan(path)
    found = _match(specs, expect(module))
    for label, spec in found.items():
        (op, mats) = expect(module)[label]
        N, M, slices = spec.shape_info()
        assert (N, M, slices) == (max(mats[0].shape), min(mats[0].shape), len(mats))
        assert spec.view.suffix == (label if "." in label or label in ("q", "k", "v") else "")
    # every tensor of the file is listed once: analysed (once per view) or skipped with a reason
    keys = {s.tensor.key for s in specs}
    assert len(keys) == tensor_count
    reasons = [s.reason for s in specs if s.skipped]
    assert all(reasons)
    float_reasons = [s.reason for s in specs if s.skipped and s.tensor.is_float and len(s.tensor.dims) >= 1]
    for prefix, count in skips.items():
        options = prefix.split("|")
        assert sum(any(r.startswith(o) for o in options) for r in float_reasons) == count, (prefix, float_reasons)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_tied_weights_are_analysed_once_with_both_users(dynamo: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = TiedLM().eval()
    path = tmp_path / "tied.onnx"
    _export(module, torch.tensor([[1, 2, 3]]), path, dynamo)
    specs, _ = _plan(path)
    analysed = [s for s in specs if not s.skipped]
    assert len(analysed) == 1 and analysed[0].op == "Gather"
    # dynamo's node names (node_embedding) give way to the module paths it records in metadata
    assert analysed[0].used_by == (["emb", "head"] if dynamo else ["/emb/Gather", "/head/MatMul"])
    copy = [s for s in specs if s.skipped and s.reason.startswith("tied copy of")]
    assert len(copy) == 1 and copy[0].tensor.dims == (16, 50)


def test_transformer_encoder_layer_dynamo(tmp_path: Path) -> None:
    """TorchScript cannot export it in torch 2.13 (is_causal tensor); dynamo gives 4 matrices."""
    torch.manual_seed(0)
    module = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True).eval()
    with torch.no_grad():  # no two equal tensors (the optimiser merges the fresh norms' ones and zeros)
        for param in module.parameters():
            param.uniform_(-0.5, 0.5)
    path = tmp_path / "tel.onnx"
    _export(module, torch.randn(1, 5, 16), path, True)
    specs, _ = _plan(path)
    _match(
        specs,
        {
            **qkv_parts(module.self_attn),
            "out_proj": ("Gemm", [_np(module.self_attn.out_proj.weight)]),
            "linear1": ("MatMul", [_np(module.linear1.weight)]),
            "linear2": ("MatMul", [_np(module.linear2.weight)]),
        },
    )
    norms = [s for s in specs if s.skipped and s.tensor.name.startswith("norm")]
    assert len(norms) == 4 and all(s.op == "LayerNormalization" for s in norms)


def test_skl2onnx_mlp_classifier(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X[:300] / 16.0, y[:300])
    path = tmp_path / "mlp.onnx"
    path.write_bytes(to_onnx(clf, X[:1].astype(np.float32), options={"zipmap": False}).SerializeToString())
    specs, tensor_count = _plan(path)
    # sklearn's coefs_ are [in, out]: the (out x in) matrix is their transpose
    found = _match(specs, {f"layer{k}": ("MatMul", [c.T.astype(np.float32)]) for k, c in enumerate(clf.coefs_)})
    assert [found[f"layer{k}"].shape_info() for k in range(3)] == [(64, 32, 1), (32, 16, 1), (16, 10, 1)]
    assert len({s.tensor.key for s in specs}) == tensor_count
    biases = [s for s in specs if s.tensor.name.startswith("intercepts")]  # stored as [1, out] rows
    assert len(biases) == 3 and all(s.reason.startswith("vector of shape [1, ") for s in biases)


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 12, 3)
        self.bn = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_batchnorm_folded_into_conv_is_noted(dynamo: bool, tmp_path: Path) -> None:
    from wwaudit.ingest.plan import BN_FOLDED_NOTE, BN_MAYBE_FOLDED_NOTE

    torch.manual_seed(0)
    module = ConvBN().eval()
    with torch.no_grad():  # a trained BatchNorm: the folded weights differ from conv1's
        module.bn.running_var.uniform_(0.5, 2.0)
        module.bn.weight.uniform_(0.5, 2.0)
    path = tmp_path / "convbn.onnx"
    _export(module, torch.randn(1, 4, 8, 8), path, dynamo)
    specs, _ = _plan(path)
    convs = [s for s in specs if not s.skipped]
    assert len(convs) == 2 and all(s.op == "Conv" for s in convs)
    folded, plain = sorted(convs, key=lambda s: s.position)
    assert folded.notes == [BN_FOLDED_NOTE if dynamo else BN_MAYBE_FOLDED_NOTE]
    assert plain.notes == []
    # the folded weight is conv1's scaled per output channel by gamma / sqrt(var + eps)
    scale = _np(module.bn.weight / torch.sqrt(module.bn.running_var + module.bn.eps))
    expected = conv_mats(module.conv1.weight * torch.from_numpy(scale)[:, None, None, None], 1)
    assert all(np.allclose(g, e, rtol=1e-5, atol=1e-6) for g, e in zip(folded.matrices(), expected))
    assert not any(s.tensor.name.startswith("bn.") and not s.skipped for s in specs)
