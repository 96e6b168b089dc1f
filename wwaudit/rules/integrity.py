"""Integrity rules (WW020-WW024): payload ambiguities, where what runs may differ from what is seen.

Each reads the facts ingest/integrity.py found while loading (RuleContext.integrity_problems)
and reports them at error severity: a model whose weights can be read two ways cannot be signed
off on the strength of either reading. The messages say which payload onnxruntime executes
(checked against onnxruntime itself) and that wwaudit audits that same payload.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Protocol, Sequence, TypeVar

from wwaudit.records import IntegrityIssue

R = TypeVar("R")


class _Context(Protocol):
    """The part of findings.RuleContext these rules read (findings imports this module, so the
    rules are typed against this protocol instead of importing it back)."""

    @property
    def integrity_problems(self) -> Sequence[IntegrityIssue]: ...


def _facts(kind: str) -> Callable[[_Context, Mapping[str, float]], Iterable[tuple[None, str]]]:
    """A model-scope check that reports every integrity fact of one kind."""

    def check(ctx: _Context, params: Mapping[str, float]) -> Iterable[tuple[None, str]]:
        for issue in ctx.integrity_problems:
            if issue.kind == kind:
                yield None, f"integrity: {issue.message}"

    check.__name__ = f"check_{kind}"
    return check


def integrity_rules(rule: Callable[..., R]) -> tuple[R, ...]:
    """The five integrity rules, built with findings.Rule (passed in: no import cycle)."""
    return (
        rule(
            "WW020",
            "Tensor with two payloads",
            "error",
            "model",
            "A tensor that stores its values twice (raw_data and float_data, or raw_data and external data) can "
            "show one set of weights in a viewer while onnxruntime executes the other: a known way to hide weights.",
            "Re-export the model, or strip every payload but one (onnx.numpy_helper round trip) and audit again.",
            _facts("two_payloads"),
        ),
        rule(
            "WW021",
            "Duplicate initializer names",
            "error",
            "model",
            "Two initializers with one name: onnxruntime silently runs the last one, tools that stop at the first "
            "show another, so what is reviewed need not be what runs.",
            "Rename or remove the duplicate initializers (onnx.checker refuses them) and audit again.",
            _facts("duplicate_initializer"),
        ),
        rule(
            "WW022",
            "Initializer a graph input can override",
            "error",
            "model",
            "An initializer that is also listed as a graph input is only a default: the caller can feed any value "
            "for it at run time, so the audited weight is not necessarily the one that runs.",
            "Remove the initializer from the graph inputs (onnxruntime's remove_initializer_from_input.py), "
            "unless overriding it is intended and documented.",
            _facts("input_override"),
        ),
        rule(
            "WW023",
            "External data ranges overlap",
            "error",
            "model",
            "Two tensors read overlapping bytes of one external-data file: one stored payload stands for two "
            "weights, and editing one silently edits the other.",
            "Re-save the model with onnx.save_model(..., save_as_external_data=True) so each tensor owns its bytes.",
            _facts("overlapping_external"),
        ),
        rule(
            "WW024",
            "Declared dtype and payload field disagree",
            "error",
            "model",
            "A tensor declared as one dtype whose values sit in another type's field: onnxruntime reads only the "
            "field of the declared dtype, so the values a viewer may decode from the other field never run.",
            "Re-export the tensor with its values in the field of its dtype (or in raw_data).",
            _facts("dtype_payload"),
        ),
    )
