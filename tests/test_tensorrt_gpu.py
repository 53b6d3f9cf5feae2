"""TensorRT 10 / 11: build the exported graphs into engines and check their parity with PyTorch (GPU only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.export.engines import BucketedTextEncoder, StreamingEngine, load_engine
from emostream.export.onnx import export_onnx
from emostream.export.sidecar import read_sidecar
from emostream.export.verify import verify_export
from emostream.model.checkpoint import save_checkpoint
from emostream.model.features.spec import default_feature_spec
from emostream.model.mcncl import MCNCL
from tests.model_helpers import small_config

pytestmark = pytest.mark.gpu


def _require_tensorrt() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("TensorRT is not installed (pip install 'emostream[tensorrt]')")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (and a CUDA build of torch) here")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_tensorrt()
    from emostream.model.features.weights import MissingWeightsError

    tmp = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    model = MCNCL(small_config())
    ckpt = save_checkpoint(tmp / "small.safetensors", model, default_feature_spec().to_dict(), {"test": "trt"})
    out = tmp / "onnx"
    export_onnx(ckpt, out, parts=["step"])
    try:
        export_onnx(ckpt, out, parts=["text_encoder", "frame_backbone"], text_buckets=[16])
    except MissingWeightsError as e:
        pytest.skip(f"encoder weights not installed: {e}")
    return out


@pytest.fixture(scope="module")
def fp32_dir(onnx_dir: Path) -> Path:
    from emostream.export.tensorrt import build_all

    out = onnx_dir.parent / "engines"
    built = build_all(onnx_dir, out, fp16=False, workspace_mb=1024)
    assert set(built) == {"step", "text_encoder", "text_encoder.L16", "frame_backbone"}
    return out


def test_step_engine_parity_fp32(fp32_dir: Path) -> None:
    report = verify_export(fp32_dir, steps=30, engine="tensorrt", parts=())
    assert report["backend"] == "tensorrt" and report["steps"] == 30
    assert report["max_abs_diff"] <= 1e-4, report
    assert report["argmax_agreement"] == 1.0, report


def test_encoder_engines_parity_fp32(fp32_dir: Path) -> None:
    report = verify_export(fp32_dir, steps=2, engine="tensorrt", tolerance=1e-3)
    assert report["text_encoder_max_abs_diff"] <= 1e-3, report
    assert report["text_encoder_bucketed_max_abs_diff"] <= 1e-3, report
    assert report["frame_backbone_max_abs_diff"] <= 1e-3, report
    with BucketedTextEncoder.load("tensorrt", fp32_dir) as text:
        assert text.lengths == [16, 128]
        assert text.encode(["hello", "how are you doing today?"]).shape == (2, 384)


def test_engine_sidecar_names_and_timing_cache(onnx_dir: Path, fp32_dir: Path) -> None:
    side = read_sidecar(fp32_dir / "step.engine")
    onnx_side = read_sidecar(onnx_dir / "step.onnx")
    assert side["tensorrt"]["fp16"] is False and side["tensorrt"]["fp16_mode"] is None
    assert side["tensorrt"]["version"].split(".")[0] in ("10", "11")
    assert side["checkpoint_sha256"] == onnx_side["checkpoint_sha256"]
    assert (fp32_dir / "timing.cache").stat().st_size > 0
    with load_engine("tensorrt", fp32_dir) as eng, load_engine("onnx", onnx_dir) as ref:
        assert eng.input_names == ref.input_names and eng.output_names == ref.output_names
        feeds = {n: torch.zeros(s.shape, dtype=torch.float32 if s.dtype == "float32" else torch.int64,
                                device="cuda") for n, s in eng.input_specs.items()}
        outs = eng.infer_tensors(feeds)
        assert outs["probs"].is_cuda and torch.allclose(outs["probs"].sum(-1), torch.ones(1, device="cuda"))


def test_streaming_engine_on_tensorrt(fp32_dir: Path) -> None:
    with StreamingEngine(load_engine("tensorrt", fp32_dir)) as stream, \
            StreamingEngine(load_engine("torch", read_sidecar(fp32_dir / "step.engine")["checkpoint_path"])) as ref:
        rng = np.random.default_rng(0)
        for t in range(5):
            utt = {"text": rng.normal(size=12), "audio": rng.normal(size=8), "speaker": t % 3}
            np.testing.assert_allclose(stream.step(utt), ref.step(utt), atol=1e-4)


def test_step_engine_fp16(onnx_dir: Path, tmp_path: Path) -> None:
    from emostream.export.tensorrt import build_engine

    engine = build_engine(onnx_dir / "step.onnx", tmp_path / "step.engine", fp16=True)
    trt_side = read_sidecar(engine)["tensorrt"]
    assert trt_side["fp16"] is True
    # TensorRT 10: the FP16 builder flag; 11 (no such flag): a float16 ONNX graph, strongly typed
    assert trt_side["fp16_mode"] == ("builder_flag" if trt_side["version"].startswith("10.") else "onnx_graph")
    assert trt_side["strongly_typed"] is (trt_side["fp16_mode"] == "onnx_graph")
    report = verify_export(tmp_path, steps=30, engine="tensorrt", parts=())
    assert report["max_abs_diff"] <= 1e-2, report
    assert report["argmax_agreement"] >= 0.9, report
