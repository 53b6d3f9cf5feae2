"""Float32 -> float16 conversion of an exported ONNX graph (for TensorRT 11's strongly typed builds).

TensorRT 11 removed the precision builder flags (`BuilderFlag.FP16` and the rest) and builds every
network strongly typed, so an FP16 engine needs a graph whose tensors are FP16. `convert_to_float16`
rewrites a float32 graph with `onnx` only:

- float32 initializers, `Constant` values, `ConstantOfShape` fill values and `Cast(to=FLOAT)` become
  float16 (finite values clamped to the float16 range, tiny non-zero ones kept non-zero);
- graph inputs and outputs stay float32, with `Cast` nodes at the boundary, so the engine's I/O
  contract (names, shapes, dtypes in the sidecar) does not change;
- the ops in `keep_fp32_ops` (default `KEEP_FP32_OPS`: normalisation, softmax and reductions, whose
  accumulations are sensitive, plus ops whose float inputs or outputs are float32-only or typed by
  an attribute) run in float32, fed and followed by `Cast` nodes.

Graphs with subgraphs (If/Loop/Scan) are refused. The result is checked with strict ONNX shape
inference, so a type mismatch fails here rather than in the TensorRT parser.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)  # 2**-24

KEEP_FP32_OPS: frozenset[str] = frozenset({
    # numerically sensitive: reductions inside, accumulate in float32
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "Softmax", "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceL1", "ReduceL2", "ReduceSumSquare",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "CumSum",
    # float32-only inputs (scales, boxes) or float outputs typed by an attribute
    "Resize", "Upsample", "NonMaxSuppression", "EyeLike", "RandomNormal", "RandomNormalLike",
    "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
})
# ops that accept any input type (their float inputs need no cast)
_TYPE_AGNOSTIC_INPUTS = frozenset({"Cast", "Shape", "Size"})


class Float16ConversionError(ValueError):
    """A graph that this converter cannot rewrite."""


def to_float16_array(values: np.ndarray) -> np.ndarray:
    """float32 values as float16: finite values clamped to +-65504, non-zero ones below the smallest
    subnormal kept as +-2**-24 (an epsilon must not become 0); inf and nan stay as they are."""
    a = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(a)
    out = np.where(finite, np.clip(a, -FP16_MAX, FP16_MAX), a)
    tiny = finite & (a != 0) & (np.abs(a) < FP16_TINY)
    out = np.where(tiny, np.sign(a) * FP16_TINY, out)
    return out.astype(np.float16)


def _half_tensor(t: TensorProto) -> TensorProto:
    return numpy_helper.from_array(to_float16_array(numpy_helper.to_array(t)), t.name)


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:  # onnx raises its own InferenceError subclasses
        raise Float16ConversionError(f"ONNX shape inference failed on the float32 graph: {e}") from e
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 0
    while out in taken:
        i += 1
        out = f"{name}_{i}"
    taken.add(out)
    return out


def convert_to_float16(model: onnx.ModelProto, keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS) -> onnx.ModelProto:
    """A float16 copy of a float32 `model` (float32 I/O kept); `model` itself is not changed."""
    keep = frozenset(keep_fp32_ops)
    src = onnx.ModelProto()
    src.CopyFrom(model)
    g = src.graph
    for node in g.node:
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            raise Float16ConversionError(f"node {node.name or node.op_type} has a subgraph: not supported")
    types = _tensor_types(src)
    names = {n for node in g.node for n in [*node.input, *node.output] if n}
    names |= {vi.name for vi in [*g.input, *g.output]} | {t.name for t in g.initializer}

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == FLOAT

    # precision (FLOAT or FLOAT16) of every float32 tensor in the new graph
    prec: dict[str, int] = {vi.name: FLOAT for vi in g.input if is_float(vi.name)}
    blocked = [node.op_type in keep for node in g.node]
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    output_names = {vi.name for vi in g.output}

    new_inits: list[TensorProto] = []
    for t in g.initializer:
        users = consumers.get(t.name, [])
        wants_half = any(not blocked[i] and g.node[i].op_type not in _TYPE_AGNOSTIC_INPUTS for i in users)
        if t.data_type == FLOAT and wants_half and t.name not in output_names:
            new_inits.append(_half_tensor(t))
            prec[t.name] = FLOAT16
        else:
            new_inits.append(t)
            if t.data_type == FLOAT:
                prec[t.name] = FLOAT

    # float outputs of converted nodes that are graph outputs are renamed; a Cast restores the name
    renamed: dict[str, str] = {}
    for node, is_blocked in zip(g.node, blocked):
        if is_blocked:
            continue
        for name in node.output:
            if name in output_names and is_float(name):
                renamed[name] = _unique(f"{name}__fp16", names)

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}

    def cast_of(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == FLOAT16 else "fp32"
            out = _unique(f"{name}__to_{suffix}", names)
            new_nodes.append(helper.make_node("Cast", [name], [out], name=_unique(f"Cast_{out}", names), to=to))
            prec[out] = to
            casts[key] = out
        return casts[key]

    for node, is_blocked in zip(g.node, blocked):
        node = _converted_node(node, is_blocked)
        want = FLOAT if is_blocked else FLOAT16
        for k, name in enumerate(node.input):
            name = renamed.get(name, name)
            node.input[k] = name
            if name in prec and node.op_type not in _TYPE_AGNOSTIC_INPUTS and prec[name] != want:
                node.input[k] = cast_of(name, want)
        for k, name in enumerate(node.output):
            if is_float(name):
                prec[name] = FLOAT if is_blocked else FLOAT16
            if name in renamed:
                node.output[k] = renamed[name]
                prec[renamed[name]] = prec[name]
        new_nodes.append(node)
    for name, internal in renamed.items():
        new_nodes.append(helper.make_node("Cast", [internal], [name], name=_unique(f"Cast_{name}", names), to=FLOAT))
    for vi in g.output:  # a float output straight from an input or a kept-float32 node needs nothing
        if is_float(vi.name) and vi.name not in renamed and prec.get(vi.name, FLOAT) != FLOAT:
            raise Float16ConversionError(f"graph output {vi.name} would not be float32")

    out = onnx.ModelProto()
    out.CopyFrom(src)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    del out.graph.initializer[:]
    out.graph.initializer.extend(new_inits)
    del out.graph.value_info[:]  # stale float32 annotations; shape inference recomputes them
    try:
        onnx.shape_inference.infer_shapes(out, strict_mode=True)
    except Exception as e:
        raise Float16ConversionError(f"the float16 graph does not type-check: {e}") from e
    n_half = sum(1 for v in prec.values() if v == FLOAT16)
    logger.info("float16 graph: %d float16 tensors, %d casts, %d nodes kept float32",
                n_half, len(casts) + len(renamed), sum(blocked))
    return out


def _converted_node(node: onnx.NodeProto, is_blocked: bool) -> onnx.NodeProto:
    """`node` with its float32 constants and target types as float16 (unchanged when kept float32)."""
    new = onnx.NodeProto()
    new.CopyFrom(node)
    if is_blocked:
        return new
    if new.op_type == "Cast":
        for a in new.attribute:
            if a.name == "to" and a.i == FLOAT:
                a.i = FLOAT16
    elif new.op_type == "Constant":
        for a in list(new.attribute):
            if a.name == "value" and a.t.data_type == FLOAT:
                a.t.CopyFrom(_half_tensor(a.t))
            elif a.name in ("value_float", "value_floats"):
                vals = np.asarray([a.f] if a.name == "value_float" else list(a.floats), np.float32)
                if a.name == "value_float":
                    vals = vals.reshape(())
                new.attribute.remove(a)
                new.attribute.append(helper.make_attribute("value", numpy_helper.from_array(to_float16_array(vals))))
    elif new.op_type == "ConstantOfShape":
        value = [a for a in new.attribute if a.name == "value"]
        if not value:  # the default fill is float32 zero
            new.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))
        elif value[0].t.data_type == FLOAT:
            value[0].t.CopyFrom(_half_tensor(value[0].t))
    return new


def convert_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS) -> Path:
    """Convert the ONNX file `src` into `dst` (one file: weights embedded); returns `dst`."""
    dst = Path(dst)
    model = convert_to_float16(onnx.load(str(src)), keep_fp32_ops)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    logger.info("float16 ONNX %s from %s", dst, src)
    return dst
