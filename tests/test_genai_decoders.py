"""LLM-class decoders in onnxruntime-genai's layout (issue 19): MatMulNBits int4 with blocks of
32 to 128, GroupQueryAttention with packed or separate Q/K/V, tied or separate LM head, one
external data file, also beyond 2 GiB. Every weight is accounted for under its module name.

The fast tests use tests/genai_layout.py, a generator that writes the builder's layout; the
slow test runs the builder itself (onnxruntime-genai + transformers) on random Llama, Qwen and
Phi-3 checkpoints and checks that the generator's layout and the builder's audit the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from genai_layout import DecoderConfig, write_decoder
from wwaudit.api import audit
from wwaudit.cli.main import main
from wwaudit.ingest.loader import load_model
from wwaudit.ingest.plan import plan_layers
from wwaudit.ingest.walker import walk

REPO = Path(__file__).resolve().parents[1]
PROJECTIONS = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _expected_layers(cfg: DecoderConfig) -> set[str]:
    names = {f"model.layers.{i}.{p}" for i in range(cfg.layers) for p in PROJECTIONS} | {"model.embed_tokens"}
    return names if cfg.tied else names | {"lm_head"}


def _layers(path: Path) -> list:
    return audit(str(path), fast=True, workers=1, policy=None).layers


CASES = {
    "packed-untied-b32": DecoderConfig(),
    "packed-tied-b64": DecoderConfig(tied=True, block_size=64),
    "separate-asym-b128": DecoderConfig(packed_qkv=False, symmetric=False, block_size=128, hidden=256, intermediate=704),
    "mha-tied-b128": DecoderConfig(heads=4, kv_heads=4, tied=True, block_size=128, layers=1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_weight_is_accounted_for_under_its_module_name(tmp_path: Path, case: str) -> None:
    cfg = CASES[case]
    layers = _layers(write_decoder(tmp_path, cfg))
    analysed = {layer.name: layer for layer in layers if layer.status == "ok"}
    assert set(analysed) == _expected_layers(cfg)
    kv = cfg.kv_heads * cfg.head_size
    for i in range(cfg.layers):
        q, k = analysed[f"model.layers.{i}.attn.q_proj"], analysed[f"model.layers.{i}.attn.k_proj"]
        assert (q.N, q.M) == (cfg.hidden, cfg.hidden)
        assert (k.N, k.M) == (max(kv, cfg.hidden), min(kv, cfg.hidden))
        down = analysed[f"model.layers.{i}.mlp.down_proj"]
        assert (down.N, down.M) == (cfg.intermediate, cfg.hidden)
        assert q.quantization.startswith(f"MatMulNBits 4-bit block {cfg.block_size}")
    # every initializer of the file is listed: analysed, or skipped with its reason
    model = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    listed = {layer.tensor for layer in layers}
    assert {t.name for t in model.graph.initializer} <= listed
    reasons = {layer.tensor: layer.reason for layer in layers if layer.status != "ok"}
    assert all(reasons[t].startswith("quantization parameter") for t in reasons if t.endswith(("_scales", "_zero_points")))
    assert all("not a weight slot" in reasons[t] for t in ("cos_cache", "sin_cache"))
    if cfg.tied:  # one weight read by the embedding (GatherBlockQuantized) and the head (MatMulNBits)
        assert sorted(analysed["model.embed_tokens"].used_by) == ["lm_head", "model.embed_tokens"]


def test_audited_matrices_are_the_dequantized_projections(tmp_path: Path) -> None:
    """The packed qkv_proj rows are cut at the head counts: Q, then K, then V (GQA sizes differ)."""
    cfg = DecoderConfig(keep=True, heads=8, kv_heads=2, hidden=256, intermediate=512, layers=1)
    loaded = load_model(str(write_decoder(tmp_path, cfg)))
    specs = {s.name: s for s in plan_layers(walk(loaded.proto, loaded.base_dir)) if s.view is not None}
    packed = cfg.kept["model.layers.0.attn.qkv_proj"]
    q, kv = cfg.heads * cfg.head_size, cfg.kv_heads * cfg.head_size
    expected = {"q_proj": packed[:q], "k_proj": packed[q : q + kv], "v_proj": packed[q + kv :]}
    for part, matrix in expected.items():
        (got,) = specs[f"model.layers.0.attn.{part}"].matrices()
        np.testing.assert_allclose(got, matrix, rtol=0, atol=1e-7)
    (down,) = specs["model.layers.0.mlp.down_proj"].matrices()
    np.testing.assert_allclose(down, cfg.kept["model.layers.0.mlp.down_proj"], rtol=0, atol=1e-7)


def test_external_data_beyond_2_gib_offset(tmp_path: Path) -> None:
    """Tensors stored past the 2 GiB mark (the > 2 GB model case) are read by offset, not whole:
    the data file is sparse, so this costs no disk, and the audit equals the one at offset 0."""
    near, far = tmp_path / "near", tmp_path / "far"
    write_decoder(near, DecoderConfig(layers=1))
    write_decoder(far, DecoderConfig(layers=1, data_offset=2**31 + 4096))
    data = far / "model.onnx.data"
    assert data.stat().st_size > 2**31
    if data.stat().st_blocks * 512 > 256 << 20:
        pytest.skip("this file system does not keep files sparse")
    a, b = tmp_path / "near.json", tmp_path / "far.json"
    assert main([str(near / "model.onnx"), "--json", str(a), "--quiet", "--fast", "--workers", "1", "--fail-on", "never"]) == 0
    assert main([str(far / "model.onnx"), "--json", str(b), "--quiet", "--fast", "--workers", "1", "--fail-on", "never"]) == 0
    near_doc, far_doc = json.loads(a.read_text()), json.loads(b.read_text())
    assert near_doc["layers"] == far_doc["layers"]
    assert near_doc["model"]["external_data"] is True


def test_truncated_external_data_spoils_only_its_layers(tmp_path: Path) -> None:
    """Sizes are checked against the declared shapes: a data file cut short leaves the tensors
    past its end unreadable (with the reason), the ones before it audited."""
    path = write_decoder(tmp_path, DecoderConfig(layers=1))
    data = tmp_path / "model.onnx.data"
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size - 4096)
    layers = _layers(path)
    errors = [layer for layer in layers if layer.status == "error"]
    assert errors and all("beyond the end" in layer.reason for layer in errors)
    assert "lm_head" in {layer.name for layer in errors}
    assert any(layer.status == "ok" for layer in layers)


# --------------------------------------------------------------------------------------------
# The builder itself (slow: transformers builds a random checkpoint, the builder quantizes it)
# --------------------------------------------------------------------------------------------
_HF_SCRIPT = r"""
import sys, torch, transformers
from tokenizers import Tokenizer, models, pre_tokenizers
kind, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
common = dict(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=256)
if kind == "llama":
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False, **common))
elif kind == "qwen":
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True, **common))
else:
    model = transformers.Phi3ForCausalLM(transformers.Phi3Config(num_key_value_heads=4, original_max_position_embeddings=256,
                                                                 pad_token_id=0, **common))
model.save_pretrained(out)
vocab = {f"t{i}": i for i in range(512)}
vocab["<unk>"] = 0
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="t1", eos_token="t2",
                                     pad_token="<unk>").save_pretrained(out)
"""

BUILDS = {
    # kind: (builder extra options, the generator's config of the same model)
    "llama": ([], DecoderConfig(heads=4, kv_heads=2)),
    "qwen": (["block_size=64"], DecoderConfig(heads=4, kv_heads=2, tied=True, block_size=64)),
    "phi3": (
        ["block_size=128", "fuse_qkv=false", "is_symmetric=false"],
        DecoderConfig(heads=4, kv_heads=4, packed_qkv=False, symmetric=False, block_size=128),
    ),
}


def _table(path: Path) -> list[tuple]:
    """What the audit says about each weight, without the values (the weights are random)."""
    rows = [(x.name, x.tensor, x.status, x.N, x.M, x.quantization, x.reason, tuple(x.used_by)) for x in _layers(path)]
    return [row for row in rows if not row[1].startswith("/model/constants/")]  # the attention mask's shape constants


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(BUILDS))
def test_builder_output_audits_like_the_generator(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("onnxruntime_genai")
    pytest.importorskip("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    hf, out = tmp_path / "hf", tmp_path / "onnx"
    subprocess.run([sys.executable, "-c", _HF_SCRIPT, kind, str(hf)], check=True, env=env, capture_output=True, timeout=300)
    extra, cfg = BUILDS[kind]
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out), "-p", "int4", "-e", "cpu"]
    command += ["-c", str(tmp_path / "cache")] + (["--extra_options", *extra] if extra else [])
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = _table(out / "model.onnx")
    generated = _table(write_decoder(tmp_path / "gen", cfg))
    assert sorted(built) == sorted(generated)
    if kind == "phi3":  # Phi-3 checkpoints store qkv_proj packed themselves
        return
    # the split of the packed projection matches the checkpoint: Q rows are q_proj's weights
    import safetensors.numpy

    weights = safetensors.numpy.load_file(str(hf / "model.safetensors"))
    loaded = load_model(str(out / "model.onnx"))
    specs = {s.name: s for s in plan_layers(walk(loaded.proto, loaded.base_dir)) if s.view is not None}
    for part in ("q_proj", "k_proj", "v_proj"):
        original = weights[f"model.layers.1.self_attn.{part}.weight"].astype(np.float64)
        (audited,) = specs[f"model.layers.1.attn.{part}"].matrices()
        error = np.linalg.norm(audited - original) / np.linalg.norm(original)
        assert error < 0.2, (part, error)  # 4-bit rounding; another projection would be ~1.4
