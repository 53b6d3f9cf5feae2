"""Export: ONNX parity with PyTorch, TensorRT static checks, sidecars, engines and the CLI (CPU only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.export.cli import main as export_main
from emostream.export.engines import (
    BackendUnavailableError,
    EngineError,
    StreamingEngine,
    check_sidecar,
    load_engine,
)
from emostream.export.onnx import export_onnx, state_output_name
from emostream.export.sidecar import SidecarError, read_sidecar, sidecar_path
from emostream.export.trt_ops import (
    OPS_FILE,
    TensorRTCompatibilityError,
    check_tensorrt_compatible,
    dynamic_shapes,
    load_operator_table,
    parse_operator_markdown,
    unsupported_ops,
)
from emostream.export.verify import compare_step_engines, synthetic_dialogue, verify_export
from emostream.model.checkpoint import load_checkpoint, save_checkpoint
from emostream.model.features.spec import default_feature_spec
from emostream.model.mcncl import MCNCL
from tests.model_helpers import small_config


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> object:
    """Tiny eager ops on a busy shared CPU are far slower with several intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save(tmp: Path, name: str, seed: int = 0, **changes: object) -> Path:
    torch.manual_seed(seed)
    cfg = small_config(**changes)
    model = MCNCL(cfg)
    model.set_normalization({"audio": {"mean": [0.5] * cfg.audio_dim, "std": [2.0] * cfg.audio_dim}})
    return save_checkpoint(tmp / f"{name}.safetensors", model, default_feature_spec().to_dict(), {"test": name})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small random checkpoint (all three modalities) and its step export."""
    tmp = tmp_path_factory.mktemp("export")
    ckpt = _save(tmp, "small")
    out = tmp / "onnx"
    export_onnx(ckpt, out, parts=["step"])
    return ckpt, out


# ------------------------------------------------------------------ step parity
def test_step_parity_onnxruntime(exported: tuple[Path, Path]) -> None:
    _, out = exported
    report = verify_export(out, steps=30, seed=0, engine="onnx", parts=())
    assert report["steps"] == 30
    assert report["backend"] == "onnxruntime"
    assert report["max_abs_diff"] <= 1e-4, report
    assert report["argmax_agreement"] == 1.0, report
    assert report["max_state_diff"] <= 1e-4, report
    assert report["ok"]


def test_step_graph_and_sidecar(exported: tuple[Path, Path]) -> None:
    ckpt_path, out = exported
    ckpt = load_checkpoint(ckpt_path)
    side = read_sidecar(out / "step.onnx")
    assert sidecar_path(out / "step.onnx").name == "step.onnx.json"
    assert side["kind"] == "step" and side["opset"] == 17
    assert side["checkpoint_sha256"] == ckpt.sha256
    assert side["labels"] == list(ckpt.config.labels)
    assert side["modalities"] == ["text", "audio", "visual"]
    assert side["feature_spec"] == default_feature_spec().to_dict()
    state = ckpt.model.init_state(1)
    inputs = {d["name"]: d for d in side["inputs"]}
    outputs = {d["name"]: d for d in side["outputs"]}
    for name in ("text", "audio", "visual", "visual_mask", "present", "speaker"):
        assert name in inputs
    assert inputs["speaker"]["dtype"] == "int64" and inputs["speaker"]["shape"] == [1]
    assert outputs["probs"]["shape"] == [1, ckpt.config.num_classes]
    for name, t in state.items():
        assert inputs[name]["shape"] == list(t.shape)
        assert outputs[state_output_name(name)]["shape"] == list(t.shape)
    assert [p["input"] for p in side["state"]] == list(state)


def test_streaming_engine_matches_model_step(exported: tuple[Path, Path]) -> None:
    ckpt_path, out = exported
    model = load_checkpoint(ckpt_path).model
    with StreamingEngine(load_engine("onnx", out)) as stream:
        dialogue = synthetic_dialogue(stream.engine.input_specs, 8, seed=3, n_parties=stream.n_parties)
        state = model.init_state(1)
        for utt in dialogue:
            feeds = {k: torch.from_numpy(v) for k, v in stream.feeds(utt).items()}
            want, state = model.step(feeds, state)
            got = stream.step(utt)
            np.testing.assert_allclose(got, want[0].detach().numpy(), atol=1e-5)
        assert stream.steps == 8
        stream.reset()
        assert all(not v.any() for v in stream.state.values())
        with pytest.raises(ValueError, match="speaker slot"):
            stream.step({**dialogue[0], "speaker": stream.n_parties})


def test_text_only_export_drops_unused_inputs(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, "text_only", modalities=("text",))
    export_onnx(ckpt, tmp_path / "onnx", parts=["step"])
    with load_engine("onnx", tmp_path / "onnx") as eng, load_engine("torch", ckpt) as ref:
        assert eng.input_names == ref.input_names
        assert not {"audio", "visual", "visual_mask"} & set(eng.input_names)
        report = compare_step_engines(eng, ref, steps=10, seed=1)
    assert report["max_abs_diff"] <= 1e-4 and report["argmax_agreement"] == 1.0
    with StreamingEngine(load_engine("onnx", tmp_path / "onnx")) as stream:
        probs = stream.step({"text": np.zeros(12, np.float32), "audio": np.ones(8), "speaker": 1})
        assert probs.shape == (4,) and abs(float(probs.sum()) - 1.0) < 1e-5


# ------------------------------------------------------------------ TensorRT static checks
def test_step_graph_is_tensorrt_compatible(exported: tuple[Path, Path]) -> None:
    _, out = exported
    check_tensorrt_compatible(out / "step.onnx")
    assert unsupported_ops(out / "step.onnx") == []
    assert dynamic_shapes(out / "step.onnx") == {}


def test_static_check_catches_bad_graphs() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Unique", ["x"], ["y"])], "bad", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert unsupported_ops(model) == ["Unique"]
    assert "x" in dynamic_shapes(model)
    with pytest.raises(TensorRTCompatibilityError, match="Unique"):
        check_tensorrt_compatible(model)


def test_operator_table_is_committed_with_its_source() -> None:
    doc = json.loads(OPS_FILE.read_text())
    assert doc["source"]["commit"] == "96e781103cfc4adf4a6bb557e94bac8e693f6f4c"
    assert doc["source"]["license"] == "Apache-2.0"
    table = load_operator_table()
    assert table.tensorrt.startswith("10")
    for op in ("Einsum", "OneHot", "LayerNormalization", "Conv", "Softmax", "Erf"):
        assert table.is_supported(op)
    assert not table.is_supported("Unique") and "Unique" in table.unsupported
    sample = (
        "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20.\n"
        "| Abs | Y | FP32, FP16 |\n| Unique | N |\n| TopK | Y | FP32 | `sorted` must be 1. |\n"
    )
    parsed = parse_operator_markdown(sample)
    assert parsed["supported"]["TopK"] == {"types": ["FP32"], "restrictions": "`sorted` must be 1."}
    assert parsed["unsupported"] == ["Unique"] and parsed["opset_range"] == [9, 20]


# ------------------------------------------------------------------ sidecar checks
def test_sidecar_mismatch_is_refused(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = exported
    side = read_sidecar(out / "step.onnx")
    spec = default_feature_spec()
    check_sidecar(side, side["labels"], spec.to_dict(), ["text", "audio", "visual"])  # fits
    check_sidecar(side, side["labels"], spec.to_dict(), ["text"])  # a subset is allowed
    with pytest.raises(SidecarError, match="labels differ"):
        check_sidecar(side, ["x", "y", "z", "w"])
    other = spec.replace(text=spec.text.__class__.from_dict({**spec.text.to_dict(), "weights_id": "roberta-base"}))
    with pytest.raises(SidecarError, match=r"text: weights_id: expected 'all-MiniLM-L6-v2', got 'roberta-base'"):
        check_sidecar(side, feature_spec=other.to_dict())
    check_sidecar(side, feature_spec=other, modalities=["audio", "visual"])  # text not fed: not compared
    with pytest.raises(SidecarError, match="max_frames"):
        check_sidecar(side, feature_spec=spec.replace(max_frames=4))
    text_only = dict(side, modalities=["text"])
    with pytest.raises(SidecarError, match="not trained on"):
        check_sidecar(text_only, modalities=["text", "visual"])
    with pytest.raises(SidecarError, match="labels differ"):
        StreamingEngine(load_engine("onnx", out), labels=("anger", "joy"))
    # an export verified against another checkpoint is refused
    other_ckpt = _save(tmp_path, "other", seed=1)
    with pytest.raises(SidecarError, match="exported from checkpoint"):
        verify_export(out, steps=2, checkpoint=other_ckpt, parts=())


def test_engine_feed_errors_and_missing_backends(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = exported
    with load_engine("onnx", out / "step.onnx") as eng:
        with pytest.raises(EngineError, match="missing"):
            eng.infer({"text": np.zeros((1, 12), np.float32)})
        feeds = {n: np.zeros(s.shape, s.dtype) for n, s in eng.input_specs.items()}
        feeds["text"] = np.zeros((1, 13), np.float32)
        with pytest.raises(EngineError, match="shape"):
            eng.infer(feeds)
    with pytest.raises(EngineError, match="unknown engine kind"):
        load_engine("tflite", out)
    with pytest.raises(EngineError, match="no onnx model"):
        load_engine("onnx", tmp_path)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from emostream.export.tensorrt import build_all

        with pytest.raises(BackendUnavailableError, match=r"pip install 'emostream\[tensorrt\]'"):
            build_all(out, tmp_path / "trt")
        assert export_main(["tensorrt", "--onnx", str(out), "--out", str(tmp_path / "trt")]) == 2


# ------------------------------------------------------------------ CLI
def test_cli_verify_prints_one_json_line(exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, out = exported
    assert export_main(["verify", str(out), "--steps", "30", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["steps"] == 30 and report["backend"] == "onnxruntime"
    assert report["max_abs_diff"] <= 1e-4 and report["argmax_agreement"] == 1.0


def test_cli_export_onnx_and_check(exported: tuple[Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, _ = exported
    out = tmp_path / "cli"
    assert export_main(["onnx", "--checkpoint", str(ckpt), "--out", str(out), "--parts", "step"]) == 0
    assert "TensorRT-compatible" in capsys.readouterr().out
    assert (out / "step.onnx").is_file() and (out / "step.onnx.json").is_file()
    assert export_main(["check", str(out)]) == 0
    assert export_main(["verify", str(tmp_path / "nothing")]) == 2


# ------------------------------------------------------------------ encoders (real weights)
@pytest.fixture(scope="module")
def encoders(exported: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emostream.model.features.weights import MissingWeightsError

    ckpt, _ = exported
    out = tmp_path_factory.mktemp("encoders")
    try:
        export_onnx(ckpt, out, parts=["text_encoder", "frame_backbone"], text_buckets=[16], backbone_batch=2)
    except MissingWeightsError as e:
        pytest.skip(f"encoder weights not installed: {e}")
    return out


def test_text_encoder_parity_and_static(encoders: Path) -> None:
    from emostream.export.engines import BucketedTextEncoder
    from emostream.export.verify import bucketed_text_parity, text_encoder_parity

    for name, length in (("text_encoder.onnx", 128), ("text_encoder.L16.onnx", 16)):
        side = read_sidecar(encoders / name)
        assert side["kind"] == "text_encoder" and side["length"] == length and side["max_length"] == 128
        assert [d["name"] for d in side["inputs"]] == ["input_ids", "attention_mask", "pool_mask"]
        assert [d["shape"] for d in side["inputs"]] == [[1, length]] * 3
        assert side["outputs"][0]["shape"] == [1, 384]
        check_tensorrt_compatible(encoders / name)
        with load_engine("onnx", encoders / name) as eng:
            result = text_encoder_parity(eng)
        assert result["max_abs_diff"] <= 1e-4, (name, result)
    assert (encoders / "tokenizer" / "tokenizer_config.json").is_file()
    with BucketedTextEncoder.load("onnx", encoders) as text:
        assert text.lengths == [16, 128]
        assert text.feeds("Fine.")[0] == 0 and text.feeds("word " * 40)[0] == 1
        assert bucketed_text_parity(text) <= 1e-4
        assert text.encode(["", "hi"]).shape == (2, 384)


def test_frame_backbone_parity_and_static(encoders: Path) -> None:
    from emostream.export.verify import frame_backbone_parity

    side = read_sidecar(encoders / "frame_backbone.onnx")
    assert side["kind"] == "frame_backbone"
    assert side["inputs"][0]["shape"] == [2, 3, 224, 224] and side["outputs"][0]["shape"] == [2, 1280]
    check_tensorrt_compatible(encoders / "frame_backbone.onnx")
    with load_engine("onnx", encoders, part="frame_backbone") as eng:
        result = frame_backbone_parity(eng)
    assert result["frame_backbone_max_abs_diff"] <= 1e-4, result


# ------------------------------------------------------------------ the bundled checkpoint
def test_bundled_checkpoint_exports_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`emostream export onnx` (default checkpoint) + `verify --steps 30`: ONNX Runtime matches PyTorch."""
    from emostream.export.engines import BucketedTextEncoder
    from emostream.export.verify import bucketed_text_parity
    from emostream.model.checkpoint import default_checkpoint_path

    out = tmp_path / "bundled"
    assert export_main(["onnx", "--out", str(out), "--text-buckets", "16"]) == 0
    side = read_sidecar(out / "step.onnx")
    assert side["checkpoint_sha256"] == load_checkpoint(default_checkpoint_path()).sha256
    for graph in sorted(out.glob("*.onnx")):
        check_tensorrt_compatible(graph)  # every op on TensorRT 10's list, every shape static
    capsys.readouterr()
    assert export_main(["verify", str(out), "--steps", "30", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 30 and report["max_abs_diff"] <= 1e-4 and report["argmax_agreement"] == 1.0
    with BucketedTextEncoder.load("onnx", out) as text:  # the fine-tuned MiniLM patch, exported
        assert "minilm-meld" in text.sidecar["ref"]
        assert bucketed_text_parity(text) <= 1e-4


def test_the_live_text_encoder_runs_on_onnxruntime_and_matches_eager(engine_cache: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving with --engine onnx encodes text through the exported buckets (fine-tuned patch
    included), with the checkpoint's spec, and gives the eager encoder's vectors."""
    import json

    from emostream.export.engines.text import EngineTextFeaturizer
    from emostream.model.checkpoint import load_checkpoint
    from emostream.model.data.features import checkpoint_featurizers
    from emostream.model.features.context import dialogue_inputs
    from emostream.realtime.runtime import build_featurizers_for

    monkeypatch.setenv("EMOSTREAM_CACHE", str(engine_cache))
    ckpt = load_checkpoint(None)
    live = build_featurizers_for(ckpt, "onnx").text
    assert isinstance(live, EngineTextFeaturizer)
    eager = checkpoint_featurizers(ckpt)["text"]
    assert live.spec == eager.spec
    script = json.loads((Path(__file__).parent / "data" / "dialogue.json").read_text())["utterances"]
    texts = [u["text"] for u in script] + ["", "Wait, what?", "so " * 200]  # empty, short, truncated
    speakers = [u.get("speaker", 0) for u in script] + [0, 1, 0]
    assert live.context_turns == eager.context_turns
    sentences = dialogue_inputs(texts, speakers, eager.context_turns)  # what a live session builds
    got, want = live(sentences), eager(sentences)
    assert got.shape == want.shape and float(np.abs(got - want).max()) < 1e-4
    assert live.encoder.lengths == [64, 128]  # live loads two buckets (each graph holds its own weights)
    used = {live.encoder.feeds(s)[0] for s in sentences}
    assert used == {0, 1}  # short and long inputs take different static lengths
