"""Payload ambiguity: tensors whose stored bytes can be read in more than one way.

A TensorProto can carry its values in several places at once (raw_data, a typed field such as
float_data, external data), an initializer name can repeat, a graph input can share an
initializer's name (the caller then overrides the weight at run time), and two external tensors
can point into the same bytes. A viewer or a checker may show one payload while onnxruntime
executes another: a weight can be hidden that way. This module only finds these facts; the
rules in rules/integrity.py report them at error severity.

Which payload runs was checked against onnxruntime 1.32 itself (tests/test_integrity.py runs
each construction through it): external data wins over raw_data, raw_data over the typed
fields, the first of several same-named initializers wins when it holds 128 bytes or more and
the last one below that (sparse copies count after dense ones: ORT_FIRST_COPY_BYTES in the
walker), a fed graph input
replaces the initializer of the same name, and only the typed field that matches the declared
dtype is read. wwaudit reads the same payload in each case.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator

import onnx
from onnx import TensorProto

from wwaudit.errors import InputError
from wwaudit.ingest.tensors import dtype_name, element_count, parse_external, stored_nbytes
from wwaudit.records import IntegrityIssue, short_name

# At most this many issues of one kind are listed (a crafted file can hold millions).
MAX_ISSUES_PER_KIND = 20

# The typed payload field each dtype may use (onnx.proto3 comments); any other one is ignored.
_FIELD_OF: dict[int, str] = {
    TensorProto.FLOAT: "float_data",
    TensorProto.COMPLEX64: "float_data",
    TensorProto.DOUBLE: "double_data",
    TensorProto.COMPLEX128: "double_data",
    TensorProto.INT64: "int64_data",
    TensorProto.UINT32: "uint64_data",
    TensorProto.UINT64: "uint64_data",
    TensorProto.STRING: "string_data",
}
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def _expected_field(data_type: int) -> str:
    """int32_data holds every other fixed-size type (int8/16/32, uint8/16, bool, float16, float8...)."""
    return _FIELD_OF.get(data_type, "int32_data")


def _payloads(t: TensorProto) -> list[str]:
    """The payload fields a tensor sets, in the order onnxruntime prefers them (one ListFields call)."""
    present = {desc.name for desc, _ in t.ListFields()}
    found = [name for name in _TYPED_FIELDS if name in present]
    if "raw_data" in present:
        found.insert(0, "raw_data")
    if t.data_location == TensorProto.EXTERNAL:
        found.insert(0, "external data")
    return found


def _payload_issues(t: TensorProto) -> Iterator[IntegrityIssue]:
    """Two payloads in one tensor, and a typed field that does not match the declared dtype."""
    found = _payloads(t)
    if len(found) > 1:
        yield IntegrityIssue(
            "two_payloads",
            (
                f"tensor '{short_name(t.name)}' carries {len(found)} payloads ({', '.join(found)}): onnxruntime executes "
                f"the {found[0]} and ignores the rest, and wwaudit audits the same {found[0]}; a viewer may show another"
            ),
        )
    expected = _expected_field(t.data_type)
    for name in found:
        if name in _TYPED_FIELDS and name != expected:
            yield IntegrityIssue(
                "dtype_payload",
                (
                    f"tensor '{short_name(t.name)}' is declared {dtype_name(t.data_type)} "
                    f"but holds its values in {name}: onnxruntime reads only {expected} for that dtype "
                    f"(it refuses the tensor when that is empty), so the values in {name} never run"
                ),
            )


def _graphs(model: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto, str]]:
    """Every graph and subgraph with a label, iteratively (nesting is bounded by protobuf)."""
    stack: list[tuple[onnx.GraphProto, str]] = [(model.graph, "")]
    while stack:
        graph, label = stack.pop()
        yield graph, label
        for node in graph.node:
            for attr in node.attribute:
                subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                for sub in subs:
                    stack.append((sub, f"{label}/{node.name or node.op_type}.{attr.name}".lstrip("/")))


def _name_issues(model: onnx.ModelProto) -> Iterator[IntegrityIssue]:
    """Repeated initializer names in one graph, and main-graph inputs that shadow an initializer."""
    for graph, label in _graphs(model):
        where = f" in {label}" if label else ""
        names = [t.name for t in graph.initializer] + [sp.values.name for sp in graph.sparse_initializer]
        counts: dict[str, int] = defaultdict(int)
        for name in names:
            counts[name] += 1
        for name, count in counts.items():
            if count > 1:
                yield IntegrityIssue(
                    "duplicate_initializer",
                    (
                        f"initializer '{short_name(name)}'{where} is stored {count} times: onnxruntime (1.32) executes the "
                        "first copy when it holds 128 bytes or more and the last copy below that (sparse copies count "
                        "after dense ones); wwaudit audits the same copy, but another tool may show another"
                    ),
                )
    inits = {t.name for t in model.graph.initializer} | {sp.values.name for sp in model.graph.sparse_initializer}
    for graph_input in model.graph.input:
        if graph_input.name in inits:
            yield IntegrityIssue(
                "input_override",
                (
                    f"initializer '{short_name(graph_input.name)}' is also a graph input: onnxruntime executes whatever value "
                    "the caller feeds for it and the stored weight only when none is fed; wwaudit audits the stored one"
                ),
            )


def _external_ranges(tensors: list[TensorProto]) -> Iterator[IntegrityIssue]:
    """External tensors whose byte ranges in one file overlap (one set of bytes, two weights)."""
    by_file: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for t in tensors:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        try:
            ref = parse_external(t)
            length = ref.length if ref.length is not None else stored_nbytes(t.data_type, element_count(tuple(t.dims)))
        except InputError:
            continue  # the tensor's own read reports it
        if length:
            by_file[ref.location].append((ref.offset, ref.offset + length, t.name))
    for location, ranges in by_file.items():
        ranges.sort()
        end, owner = -1, ""
        for start, stop, name in ranges:
            if start < end:
                yield IntegrityIssue(
                    "overlapping_external",
                    (
                        f"tensors '{short_name(owner)}' and '{short_name(name)}' share bytes of external file '{short_name(location)}' (overlapping ranges): "
                        "onnxruntime executes both from the same bytes, so one stored weight stands for two"
                    ),
                )
            if stop > end:
                end, owner = stop, name


def integrity_issues(model: onnx.ModelProto, tensors: list[TensorProto]) -> list[IntegrityIssue]:
    """Every payload ambiguity of the model, at most MAX_ISSUES_PER_KIND of each kind (plus a count).

    `tensors`: every TensorProto of the model (loader.all_tensors), walked once by the loader.
    """

    def tensor_issues() -> Iterator[IntegrityIssue]:
        for t in tensors:
            yield from _payload_issues(t)

    kept: list[IntegrityIssue] = []
    listed: dict[str, int] = defaultdict(int)
    extra: dict[str, int] = defaultdict(int)
    for source in (tensor_issues(), _name_issues(model), _external_ranges(tensors)):
        for issue in source:
            if listed[issue.kind] < MAX_ISSUES_PER_KIND:
                listed[issue.kind] += 1
                kept.append(issue)
            else:
                extra[issue.kind] += 1
    for kind, count in extra.items():
        kept.append(IntegrityIssue(kind, f"{count} more of the same kind, not listed"))
    return kept
