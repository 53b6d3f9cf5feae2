"""Bad files and devices fail with a clear message naming the file or device, and nothing is
unpickled or executed: a media file that is not media, an engine exported from another model, an
engine sidecar of another format version, a corrupt engine file, a checkpoint whose sidecar
belongs to another checkpoint, a camera index that does not open."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from emostream.realtime.cli import run_main, serve_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled checkpoint's step, exported to ONNX (what `run` does on first use)."""
    from emostream.export.onnx import export_onnx
    from emostream.model.checkpoint import load_checkpoint

    folder = tmp_path_factory.mktemp("engine")
    export_onnx(load_checkpoint(None), folder, parts=("step",))
    return folder


def tampered(engine_dir: Path, tmp_path: Path, change: Any) -> Path:
    folder = tmp_path / "tampered"
    shutil.copytree(engine_dir, folder)
    side = folder / "step.onnx.json"
    data = json.loads(side.read_text())
    change(data)
    side.write_text(json.dumps(data))
    return folder


def test_a_file_that_is_not_media(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n" * 50)
    assert run_main(["--media", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert str(bogus) in err and "cannot open media file" in err
    assert serve_main(["--media", str(bogus), "--port", "0"]) == 2
    assert str(bogus) in capsys.readouterr().err


def test_a_media_file_without_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import av
    import numpy as np

    silent_video = tmp_path / "video_only.mp4"
    with av.open(str(silent_video), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert run_main(["--media", str(silent_video)]) == 2
    err = capsys.readouterr().err
    assert str(silent_video) in err and "no audio" in err


def test_a_camera_index_that_does_not_open(capsys: pytest.CaptureFixture[str]) -> None:
    from emostream.realtime.sources import WebcamSource

    if WebcamSource(57).available():
        pytest.skip("this machine has a camera at index 57")
    assert run_main(["--source", "webcam", "--camera", "57"]) == 2
    assert "camera 57 cannot be opened" in capsys.readouterr().err


def test_an_engine_exported_from_another_model(engine_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from emostream.export.sidecar import SidecarError
    from emostream.model.checkpoint import load_checkpoint
    from emostream.realtime.runtime import load_step_model

    def other_labels(d: dict) -> None:
        d["labels"] = list(reversed(d["labels"]))

    folder = tampered(engine_dir, tmp_path, other_labels)
    with pytest.raises(SidecarError, match="labels differ") as info:
        load_step_model(load_checkpoint(None), "onnx", str(folder))
    assert str(folder / "step.onnx") in str(info.value)
    # through the command line: a message, exit status 1, no traceback
    media = ROOT / "tests" / "data" / "dialogue.wav"
    assert run_main(["--media", str(media), "--engine-dir", str(folder), "--fast", "--face-expert", "none"]) == 1
    err = capsys.readouterr().err
    assert "labels differ" in err and str(folder / "step.onnx") in err and "Traceback" not in err


def test_an_engine_sidecar_of_another_format_version(engine_dir: Path, tmp_path: Path) -> None:
    from emostream.export.sidecar import SidecarError
    from emostream.model.checkpoint import load_checkpoint
    from emostream.realtime.runtime import load_step_model

    folder = tampered(engine_dir, tmp_path, lambda d: d.update(format_version=99))
    with pytest.raises(SidecarError, match="format version 99") as info:
        load_step_model(load_checkpoint(None), "onnx", str(folder))
    assert str(folder / "step.onnx.json") in str(info.value)


def test_a_corrupt_engine_file(engine_dir: Path, tmp_path: Path) -> None:
    from emostream.export.engines import EngineError
    from emostream.model.checkpoint import load_checkpoint
    from emostream.realtime.runtime import load_step_model

    folder = tampered(engine_dir, tmp_path, lambda d: None)
    (folder / "step.onnx").write_bytes(b"\x08\x01garbage" * 100)
    with pytest.raises(EngineError, match="could not load") as info:
        load_step_model(load_checkpoint(None), "onnx", str(folder))
    assert str(folder / "step.onnx") in str(info.value)


def test_a_checkpoint_with_another_checkpoints_sidecar(tmp_path: Path) -> None:
    from emostream.model.checkpoint import CheckpointError, default_checkpoint_path, load_checkpoint

    bundled = default_checkpoint_path()
    weights = tmp_path / "mine.safetensors"
    shutil.copy(bundled, weights)
    data = json.loads(bundled.with_suffix(".json").read_text())
    data["sha256"] = "0" * 64  # the sidecar of a checkpoint with other weights
    weights.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(weights)
    assert str(weights) in str(info.value)


def test_nothing_is_unpickled_or_executed() -> None:
    """Every loader of the library reads safetensors, JSON, ONNX or torch state dicts with
    weights_only=True: no pickle, no eval/exec, no unsafe YAML, no np.load with pickles."""
    problems: list[str] = []
    for folder in ("realtime", "model", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                    if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "marshal") for n in names):
                        problems.append(f"{where} imports a pickle module")
                if not isinstance(node, ast.Call):
                    continue
                func = ast.unparse(node.func)
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if func in ("eval", "exec"):
                    problems.append(f"{where} calls {func}")
                if func == "torch.load" and keywords.get("weights_only") != "True":
                    problems.append(f"{where} torch.load without weights_only=True")
                if func.endswith("np.load") and keywords.get("allow_pickle") == "True":
                    problems.append(f"{where} np.load(allow_pickle=True)")
                if func == "yaml.load":
                    problems.append(f"{where} yaml.load (use yaml.safe_load)")
    assert problems == []


def test_run_without_a_microphone_exits_non_zero_and_does_not_hang(engine_cache: Path) -> None:
    """The real command, in its own process: no PortAudio (or no input device) is an error naming
    the microphone and exit status 1, not a hang (every thread it started is released)."""
    import os
    import subprocess
    import sys

    from emostream.realtime.app import microphone_available

    if microphone_available():
        pytest.skip("this machine has a microphone")
    env = {**os.environ, "EMOSTREAM_CACHE": str(engine_cache)}
    done = subprocess.run([sys.executable, "-m", "emostream.realtime.cli", "run", "--source", "webcam",
                           "--face-expert", "none"], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "microphone" in done.stderr and "Traceback" not in done.stderr
