"""The layer plan of formats that store named tensors without a graph (safetensors, GGUF).

Without ops, what a tensor is comes from its name, its shape and the model's configuration:
2-D weights are projections ([out, in], torch's nn.Linear layout) unless the architecture is
known to store them [in, out] (GPT-2's Conv1D); token and position tables are embeddings;
the LM head and classifier are heads (projections whose rows are the vocabulary or classes);
4-D weights are convolutions ([out, in/groups, kh, kw]); 3-D weights are stacks of matrices
(mixture-of-experts). 1-D tensors and scalars are biases and norm scales, listed as skipped with
the same reasons as in an ONNX audit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wwaudit.ingest.plan import MIN_EVALS, LayerSpec
from wwaudit.ingest.tensors import TensorRef
from wwaudit.ingest.views import View
from wwaudit.ingest.walker import Source

# Tables looked up by index (Gather in an ONNX export): one row per token or position.
_EMBEDDING = re.compile(
    r"(^|\.)(embed_tokens|embed_positions|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings"
    r"|tok_embeddings|token_embd|position_embd|embeddings|embedding|embed|shared)(\.weight)?$"
)
# Output projections onto the vocabulary or the classes.
_HEAD = re.compile(r"(^|\.)(lm_head|output|classifier|score|head)(\.weight)?$")
# Architectures (config.json model_type) whose projections are stored [in, out] (transformers' Conv1D).
TRANSPOSED_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt"})


@dataclass
class Architecture:
    """What config.json says about the model, reduced to what the plan needs."""

    name: str = ""  # architectures[0], e.g. LlamaForCausalLM
    model_type: str = ""
    vocab_size: int | None = None
    tied: bool = False  # tie_word_embeddings: the head reuses the embedding table
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: dict) -> "Architecture":
        archs = config.get("architectures")
        name = str(archs[0]) if isinstance(archs, list) and archs else ""
        vocab = config.get("vocab_size")
        return cls(
            name=name[:200],
            model_type=str(config.get("model_type", ""))[:100],
            vocab_size=vocab if isinstance(vocab, int) and vocab > 0 else None,
            tied=bool(config.get("tie_word_embeddings", False)),
        )


def _role(tensor: TensorRef, arch: Architecture) -> tuple[str, View | None, str | None]:
    """(op label, view, skip reason) of one named tensor."""
    dims, name = tensor.dims, tensor.name
    if tensor.unsupported:
        return "", None, tensor.unsupported
    if not tensor.is_float:
        return "", None, f"integer tensor ({tensor.dtype}): indices, masks or buffers"
    if not dims:
        return "", None, "scalar"
    if len(dims) == 1:
        return "", None, "1-D (bias, norm scale or shape vector)"
    if len(dims) == 2:
        if _EMBEDDING.search(name) or (arch.vocab_size and dims[0] == arch.vocab_size and "embed" in name):
            return "Embedding", View("embedding", "matrix"), None
        transposed = arch.model_type in TRANSPOSED_TYPES
        op = "Linear (head)" if _HEAD.search(name) else ("Conv1D" if transposed else "Linear")
        return op, View("dense", "matrix_t" if transposed else "matrix"), None
    if len(dims) == 3:
        return "Linear (stacked)", View("dense", "batched"), None
    return "Conv", View("conv", "conv", (1,)), None


def layer_name(tensor_name: str) -> str:
    """The module path of a parameter: 'model.layers.0.mlp.up_proj' for '….up_proj.weight'."""
    return tensor_name[: -len(".weight")] if tensor_name.endswith(".weight") else tensor_name


def plan_named(tensors: list[TensorRef], arch: Architecture) -> list[LayerSpec]:
    """One LayerSpec per tensor, in the given order: a layer for each weight, the rest skipped."""
    specs = []
    for position, tensor in enumerate(tensors):
        op, view, reason = _role(tensor, arch)
        spec = LayerSpec(layer_name(tensor.name), op, Source(tensor), view, position, reason=reason, weight=view is not None)
        if view is not None:
            spec.used_by = [spec.name]
            n, m, slices = spec.shape_info()
            if m * slices < MIN_EVALS:
                spec.view, spec.reason = None, f"too small: {m * slices} eigenvalues < {MIN_EVALS}"
                spec.notes.append(f"shape {n}x{m} x {slices} slices")
        specs.append(spec)
    return specs


def natural_key(name: str) -> tuple:
    """Sort key that puts 'layers.2' before 'layers.10' (numbers compared as numbers)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name))
