"""Convert resemblyzer's GE2E speaker encoder (`resemblyzer/pretrained.pt`) into the bundled ONNX.

    python -m emostream.model.features.ge2e_convert PATH/TO/resemblyzer/pretrained.pt \
        [--out model/bundled/ge2e-resemblyzer.onnx]

The checkpoint (`torch.load(weights_only=True)`: keys step, model_state, optimizer_state) holds a
3-layer LSTM 40 -> 256 and a Linear 256 -> 256 (plus GE2E's similarity scale and bias, used only in
training). The exported graph takes `mels` (B, T, 40), mel power frames as resemblyzer computes
them (`emostream.realtime.voice_embedding.ge2e_mel`), and gives `embedding` (B, 256): the last
layer's final hidden state -> Linear -> ReLU -> L2 normalisation, as `VoiceEncoder.forward`.
A `.json` sidecar records the source, both sha256s, the licence and the parity with PyTorch.
resemblyzer is Apache-2.0 (Copyright 2019 Resemble.AI): keep `model/bundled/LICENSE-resemblyzer.txt`
beside the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SOURCE = {
    "package": "resemblyzer",
    "version": "0.1.4",
    "file": "resemblyzer/pretrained.pt",
    "url": "https://pypi.org/project/Resemblyzer/0.1.4/",
    "license": "Apache-2.0",
    "copyright": "Copyright 2019 Resemble.AI (author Corentin Jemine)",
    "model": "GE2E speaker encoder (Wan et al., 2018, arXiv 1710.10467) of Real-Time-Voice-Cloning: "
             "LSTM 40->256 x3 + Linear 256->256; the package does not name its training data",
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "bundled" / "ge2e-resemblyzer.onnx"
N_MELS = 40
HIDDEN = 256
LAYERS = 3


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_module(state: dict):  # noqa: ANN201 - torch is imported lazily
    """The GE2E encoder as a torch module with `state` (resemblyzer's model_state) loaded."""
    import torch
    from torch import nn

    class GE2EEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
            self.linear = nn.Linear(HIDDEN, HIDDEN)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:  # (B, T, 40) -> (B, 256)
            _, (hidden, _) = self.lstm(mels)  # hidden: (layers, B, 256)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)

    module = GE2EEncoder()
    weights = {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}
    module.load_state_dict(weights, strict=True)
    return module.eval()


def convert(src: Path, out: Path = DEFAULT_OUT) -> dict:
    """Export `src` to `out` (+ `out.json`); returns the sidecar."""
    import onnxruntime
    import torch

    checkpoint = torch.load(src, map_location="cpu", weights_only=True)
    module = build_module(checkpoint["model_state"])
    example = torch.rand(2, 160, N_MELS)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module, (example,), str(out), input_names=["mels"], output_names=["embedding"],
                      dynamic_axes={"mels": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    probe = (rng.random((3, 160, N_MELS)) * 5.0).astype(np.float32)  # (B, T, 40) mel power
    with torch.no_grad():
        ref = module(torch.from_numpy(probe)).numpy()
    got = session.run(None, {"mels": probe})[0]
    diff = float(np.abs(ref - got).max())
    if diff > 1e-5:
        raise RuntimeError(f"ONNX export differs from PyTorch by {diff}")
    sidecar = {
        "source": {**SOURCE, "sha256": _sha256(src)},
        "sha256": _sha256(out),
        "inputs": {"mels": ["batch", "frames", N_MELS]},
        "outputs": {"embedding": ["batch", HIDDEN]},
        "features": "mel power: n_fft 400 (periodic Hann), hop 160, centred with zero padding, "
                    "40 Slaney mel bands 0-8 kHz, no log (librosa.feature.melspectrogram defaults)",
        "parity_max_abs_diff": diff,
        "training_step": int(checkpoint.get("step", 0)),
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    logger.info("wrote %s (max abs diff to PyTorch %.2e)", out, diff)
    return sidecar


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="resemblyzer/pretrained.pt")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    convert(args.src, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
