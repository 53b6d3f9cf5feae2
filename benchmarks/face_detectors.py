"""Face detectors compared: OpenCV Haar cascade (`FaceDetector`) vs MTCNN (`MTCNNDetector`, its nets on
ONNX Runtime with one thread (the default, `_ort_1thread` rows) or on torch (the `backend="torch"` reference)).

Recall and false positives on a labelled set of 640x480 frames built offline from real photos, and
milliseconds per frame (median, p95) on those frames, on this machine's CPU. Prints one JSON object.

    python benchmarks/face_detectors.py [--iou 0.4] [--repeat 1] [--no-video]

The labelled set (all frames 640x480 BGR, deterministic, seed 0; the JSON's "dataset" says the same):

- face sources, hand-labelled boxes (x, y, w, h; forehead to chin, cheek to cheek):
  `skimage.data.astronaut()` (Eileen Collins, 512x512) and matplotlib's `sample_data/grace_hopper.jpg`
  (512x600) when matplotlib is installed; and the first 100 images of `skimage.data.lfw_subset()`
  (25x25 grey face crops of 100 LFW people; the box is the whole tile);
- backgrounds and face-less images: real scikit-image photos without a face (coffee, chelsea the cat,
  rocket, motorcycle_left, coins, moon, clock, hubble_deep_field, immunohistochemistry, retina, brick,
  grass, gravel, page, text, horse, cell), centre-cropped and resized to 640x480. `camera` is NOT
  face-less (the cameraman's face), so it is not used;
- subsets, a source pasted (warpAffine) onto a background: `native` (face 120 px), `small` (face 30,
  40, 50, 60, 80 px), `rotated` (±15°, ±30°, face 80 px), `dark` (whole frame x0.35 and x0.2 plus
  Gaussian noise sigma 3, face 80 px), `blur` (Gaussian sigma 2 and 3.5 on the frame, face 80 px),
  `occluded` (face 80 px with a grey bar over the lower 40% (mask), a black band over the eyes
  (sunglasses), or a skin-toned block over the left 40% (hand)), `pairs` (two faces side by side,
  60 and 100 px, each with 1.2 face widths of context: astronaut + grace hopper, astronaut +
  mirrored astronaut), `lfw` (the 100 LFW faces upscaled to 30-80 px, 4 per frame), `video`
  (every 40th frame of demo/media/sample.mp4, the astronaut with a slow zoom, upscaled 320x240 -> 640x480; boxes from the affine matrix that
  demo/make_sample.py used, checked against a re-render), `tests_data_faces` (each photo of
  tests/data/faces/ pasted at native size; box: the hand-labelled one mapped through the crop that
  tests/data/README.md documents, or for an undocumented photo (`tests_data_faces_unlabelled`) the
  centred square of 0.8 x its shorter side, approximate), and `faceless` (the face-less images,
  plus 2 frames tiling the 100 non-face LFW patches at 30-60 px).

A detection matches a labelled face when their IoU is >= --iou (greedy, one to one); recall is
matched / labelled; false positives are the unmatched detections (on face-less frames, and extra
ones on face frames, reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
W, H = 640, 480
Box = tuple[int, int, int, int]

ASTRONAUT_FACE = (182, 72, 96, 106)  # hand-labelled in skimage.data.astronaut()
GRACE_HOPPER_FACE = (167, 145, 190, 190)  # hand-labelled in matplotlib's grace_hopper.jpg
# tests/data/faces/ photos whose provenance tests/data/README.md documents as crops of the two
# sources above: (width, height) -> the hand-labelled box mapped through that crop
TEST_FACES = {
    # astronaut crop x 130..320, y 20..210
    "astronaut_collins_happy.jpg": ((190, 190), (182 - 130, 72 - 20, 96, 106)),
    # grace_hopper.jpg crop x 18..512, y 0..466, downscaled x0.518
    "grace_hopper_neutral.jpg": ((256, 241), (round((167 - 18) * 0.518), round(145 * 0.518), 98, 98)),
}
FACELESS = (
    "coffee", "chelsea", "rocket", "motorcycle_left", "coins", "moon", "clock", "hubble_deep_field",
    "immunohistochemistry", "retina", "brick", "grass", "gravel", "page", "text", "horse", "cell",
)  # fmt: skip


# ------------------------------------------------------------------------------------------ data


def _bgr(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (
            (np.clip(img, 0, 1) * 255).round().astype(np.uint8) if img.max() <= 1.0 else img.astype(np.uint8)
        )
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def _cover(img: np.ndarray, w: int = W, h: int = H) -> np.ndarray:
    """Centre crop to the w:h aspect, then resize to (h, w)."""
    ih, iw = img.shape[:2]
    s = max(w / iw, h / ih)
    cw, ch = round(w / s), round(h / s)
    x0, y0 = (iw - cw) // 2, (ih - ch) // 2
    crop = img[y0 : y0 + ch, x0 : x0 + cw]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def faceless_images() -> dict[str, np.ndarray]:
    from skimage import data

    out = {}
    for name in FACELESS:
        img = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
        out[name] = _cover(_bgr(img))
    return out


def face_sources() -> dict[str, tuple[np.ndarray, Box]]:
    from skimage import data

    sources = {"astronaut": (_bgr(data.astronaut()), ASTRONAUT_FACE)}
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if path.is_file():
            sources["grace_hopper"] = (cv2.imread(str(path)), GRACE_HOPPER_FACE)
    except ImportError:
        pass
    return sources


def paste(
    canvas: np.ndarray, src: np.ndarray, face: Box, side: float, centre: tuple[float, float],
    angle: float = 0.0, flip: bool = False, context: float | None = None,
) -> Box:  # fmt: skip
    """Warp `src` onto `canvas` (in place) so its face is `side` px wide, centred at `centre`,
    rotated by `angle` degrees -> the face's label: a box of the same scaled size on that centre.
    With `context`, only the part of `src` within `context` face widths of the face centre is used."""
    x, y, w, h = face
    if flip:
        src = src[:, ::-1]
        x = src.shape[1] - x - w
    if context is not None:
        r = context * w
        x0, y0 = max(0, round(x + w / 2 - r)), max(0, round(y + h / 2 - r))
        src = src[y0 : round(y + h / 2 + r), x0 : round(x + w / 2 + r)]
        x, y = x - x0, y - y0
    s = side / w
    m = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), angle, s)
    m[:, 2] += np.array(centre) - np.array([x + w / 2, y + h / 2])
    cv2.warpAffine(
        np.ascontiguousarray(src), m, (canvas.shape[1], canvas.shape[0]), dst=canvas,
        flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT,
    )  # fmt: skip
    fw, fh = w * s, h * s
    return (round(centre[0] - fw / 2), round(centre[1] - fh / 2), round(fw), round(fh))


def _video_frames(step: int) -> tuple[list[np.ndarray], list[Box], str]:
    """Every `step`-th frame of demo/media/sample.mp4 upscaled to 640x480, with face boxes."""
    import av
    from skimage.data import astronaut

    path = ROOT / "demo" / "media" / "sample.mp4"
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    n = len(frames)
    fh, fw = frames[0].shape[:2]
    src = _bgr(astronaut())
    cx, cy, base_w = 224.0, 120.0, 290.0  # demo/make_sample.py face_frames()
    out, boxes, worst = [], [], 0.0
    for i in range(0, n, step):
        phase = i / max(1, n - 1)
        zoom = 1.0 + 0.12 * np.sin(np.pi * phase) ** 2 + 0.02 * np.sin(2 * np.pi * i / 37)
        w = base_w / zoom
        h = w * fh / fw
        x0 = cx - w / 2 + 6.0 * np.sin(2 * np.pi * i / 53)
        y0 = cy - h / 2 + 4.0 * np.sin(2 * np.pi * i / 41)
        s = fw / w
        m = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
        render = cv2.warpAffine(src, m, (fw, fh), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        worst = max(worst, float(np.abs(render.astype(np.float32) - frames[i]).mean()))
        up = W / fw
        x, y, bw, bh = ASTRONAUT_FACE
        boxes.append(
            (
                round((x * s - x0 * s) * up),
                round((y * s - y0 * s) * up),
                round(bw * s * up),
                round(bh * s * up),
            )
        )
        out.append(cv2.resize(frames[i], (W, H), interpolation=cv2.INTER_LINEAR))
    if worst > 12.0:  # the formula no longer matches the file: labels would be wrong
        raise RuntimeError(
            f"sample.mp4 does not match demo/make_sample.py's zoom (mean abs diff {worst:.1f})"
        )
    return (
        out,
        boxes,
        f"{len(out)} of {n} frames (every {step}th), re-render mean abs diff <= {worst:.1f}/255",
    )


def build_dataset(video: bool = True) -> tuple[list[dict], dict]:
    """-> items {subset, name, image (640x480 BGR), faces [boxes]}, and a description."""
    from skimage import data

    rng = np.random.default_rng(0)
    bgs = faceless_images()
    bg_names = list(bgs)
    sources = face_sources()
    items: list[dict] = []
    k = 0

    def background() -> np.ndarray:
        nonlocal k
        k += 1
        return bgs[bg_names[k % len(bg_names)]].copy()

    def add(subset: str, name: str, image: np.ndarray, faces: list[Box]) -> None:
        items.append({"subset": subset, "name": name, "image": image, "faces": faces})

    centre = (W / 2, H / 2)
    for sname, (src, face) in sources.items():
        img = background()
        add("native", f"{sname}_120px", img, [paste(img, src, face, 120, centre)])
        for side in (30, 40, 50, 60, 80):
            img = background()
            c = (rng.uniform(100, W - 100), rng.uniform(100, H - 100))
            add("small", f"{sname}_{side}px", img, [paste(img, src, face, side, c)])
        for angle in (-30, -15, 15, 30):
            img = background()
            add("rotated", f"{sname}_rot{angle:+d}", img, [paste(img, src, face, 80, centre, angle)])
        for gain in (0.35, 0.2):
            img = background()
            box = paste(img, src, face, 80, centre)
            dark = img.astype(np.float32) * gain + rng.normal(0, 3, img.shape)
            add("dark", f"{sname}_x{gain}", np.clip(dark, 0, 255).astype(np.uint8), [box])
        for sigma in (2.0, 3.5):
            img = background()
            box = paste(img, src, face, 80, centre)
            add("blur", f"{sname}_sigma{sigma}", cv2.GaussianBlur(img, (0, 0), sigma), [box])
        for kind in ("mask", "sunglasses", "hand"):
            img = background()
            box = paste(img, src, face, 80, centre)
            x, y, w, h = box
            if kind == "mask":
                cv2.rectangle(img, (x - 4, y + int(0.6 * h)), (x + w + 4, y + h + 6), (128, 128, 128), -1)
            elif kind == "sunglasses":
                cv2.rectangle(img, (x, y + int(0.25 * h)), (x + w, y + int(0.5 * h)), (10, 10, 10), -1)
            else:
                cv2.rectangle(
                    img, (x - 10, y + int(0.2 * h)), (x + int(0.4 * w), y + h + 10), (120, 150, 200), -1
                )
            add("occluded", f"{sname}_{kind}", img, [box])
    names = list(sources)
    pairs = [(names[0], names[-1], False), (names[0], names[0], True)]  # with itself mirrored too
    for i, (a, b, mirror) in enumerate(pairs):
        for side in (60, 100):
            img = background()
            boxes = [paste(img, *sources[a], side, (W * 0.3, H / 2), context=1.2)]
            boxes.append(paste(img, *sources[b], side, (W * 0.7, H / 2), flip=mirror or a == b, context=1.2))
            add("pairs", f"{a}+{b}{'_mirrored' if mirror or a == b else ''}_{side}px_{i}", img, boxes)

    lfw = data.lfw_subset()  # (200, 25, 25) float in [0, 1]: 100 faces, then 100 non-faces

    def tile(patches: np.ndarray, img: np.ndarray) -> list[Box]:
        boxes: list[Box] = []
        cols = len(patches)
        for j, patch in enumerate(patches):
            side = int(rng.integers(30, 81))
            cell_w = W // cols
            x = int(j * cell_w + rng.integers(0, max(1, cell_w - side)))
            y = int(rng.integers(20, H - side - 20))
            tile_img = cv2.resize(_bgr(patch), (side, side), interpolation=cv2.INTER_CUBIC)
            img[y : y + side, x : x + side] = tile_img
            boxes.append((x, y, side, side))
        return boxes

    for i in range(0, 100, 4):
        img = background()
        add("lfw", f"lfw_faces_{i}-{i + 3}", img, tile(lfw[i : i + 4], img))

    n_video = "none"
    if video:
        frames, boxes, n_video = _video_frames(40)
        for j, (img, box) in enumerate(zip(frames, boxes)):
            add("video", f"sample_mp4_{j}", img, [box])

    faces_dir = ROOT / "tests" / "data" / "faces"
    test_faces = sorted(p for p in faces_dir.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for p in test_faces:
        photo = cv2.imread(str(p))
        if photo is None:
            continue
        known = TEST_FACES.get(p.name)
        ph, pw = photo.shape[:2]
        if known is not None and known[0] != (pw, ph):
            known = None  # not the documented crop any more
        if known is None:  # unlabelled: the centred square of 0.8 x the shorter side
            side = round(0.8 * min(pw, ph))
            face = ((pw - side) // 2, (ph - side) // 2, side, side)
        else:
            face = known[1]
        s = min(1.0, W / pw, H / ph)
        if s < 1.0:
            photo = cv2.resize(photo, (int(pw * s), int(ph * s)), interpolation=cv2.INTER_AREA)
            face = tuple(round(v * photo.shape[1] / pw) for v in face)
        ph, pw = photo.shape[:2]
        img = background()
        x0, y0 = (W - pw) // 2, (H - ph) // 2
        img[y0 : y0 + ph, x0 : x0 + pw] = photo
        subset = "tests_data_faces" if known is not None else "tests_data_faces_unlabelled"
        add(subset, p.name, img, [(x0 + face[0], y0 + face[1], face[2], face[3])])

    for name, img in bgs.items():
        add("faceless", name, img.copy(), [])
    for i in range(2):  # 50 non-face patches per frame: 5 rows x 10 columns, 30-60 px
        img = bgs[bg_names[(i * 7) % len(bg_names)]].copy()
        for j, patch in enumerate(lfw[100 + 50 * i : 150 + 50 * i]):
            side = int(rng.integers(30, 61))
            x = (j % 10) * (W // 10) + int(rng.integers(0, W // 10 - side + 1))
            y = (j // 10) * (H // 5) + int(rng.integers(0, H // 5 - side + 1))
            img[y : y + side, x : x + side] = cv2.resize(
                _bgr(patch), (side, side), interpolation=cv2.INTER_CUBIC
            )
        add("faceless", f"lfw_nonfaces_{i}", img, [])

    desc = {
        "frames": len(items),
        "labelled_faces": sum(len(it["faces"]) for it in items),
        "faceless_frames": sum(1 for it in items if not it["faces"]),
        "face_sources": {
            "astronaut": f"skimage.data.astronaut() (Eileen Collins), hand-labelled face {ASTRONAUT_FACE}",
            **(
                {"grace_hopper": f"matplotlib sample_data/grace_hopper.jpg, hand-labelled face {GRACE_HOPPER_FACE}"}
                if "grace_hopper" in sources else {}
            ),
            "lfw": "skimage.data.lfw_subset() faces 0-99 (25x25 grey crops, 100 people), box = tile",
            "video": f"demo/media/sample.mp4: {n_video}",
            "tests_data_faces": [p.name for p in test_faces] or "none present",
        },
        "faceless_images": list(FACELESS) + ["2 frames tiling lfw_subset() non-faces 100-199 at 30-60 px"],
        "excluded": "skimage camera (has a face), synthetic images (logo, colorwheel, phantom, checkerboard)",
        "subsets": {s: f"{sum(1 for it in items if it['subset'] == s)} frames, "
                    f"{sum(len(it['faces']) for it in items if it['subset'] == s)} faces"
                    for s in dict.fromkeys(it["subset"] for it in items)},
        "augmentations": __doc__.split("- subsets, ")[1].split("A detection matches")[0].split(": ", 1)[1]
        .replace("\n  ", " ").strip(),
    }  # fmt: skip
    return items, desc


# --------------------------------------------------------------------------------------- scoring


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def match(dets: list[Box], faces: list[Box], thr: float) -> tuple[int, int]:
    """-> (matched faces, unmatched detections), greedy by IoU."""
    pairs = sorted(((iou(d, f), i, j) for i, d in enumerate(dets) for j, f in enumerate(faces)), reverse=True)
    used_d, used_f = set(), set()
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in used_d and j not in used_f:
            used_d.add(i)
            used_f.add(j)
    return len(used_f), len(dets) - len(used_d)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def accuracy(detect: Callable[[np.ndarray], list[Box]], items: list[dict], thr: float) -> dict:
    per: dict[str, dict[str, int]] = {}
    misses: list[str] = []
    fp_faceless: list[str] = []
    fp_face: list[str] = []
    for it in items:
        hit, fp = match(detect(it["image"]), it["faces"], thr)
        s = per.setdefault(it["subset"], {"faces": 0, "found": 0, "fp": 0})
        s["faces"] += len(it["faces"])
        s["found"] += hit
        s["fp"] += fp
        if hit < len(it["faces"]):
            misses.append(it["name"])
        if fp:
            (fp_face if it["faces"] else fp_faceless).append(it["name"])
    faces = sum(s["faces"] for s in per.values())
    found = sum(s["found"] for s in per.values())
    return {
        "recall": round(found / faces, 3),
        "found": found,
        "faces": faces,
        "recall_by_subset": {k: f"{v['found']}/{v['faces']}" for k, v in per.items() if v["faces"]},
        "fp_on_faceless_frames": sum(v["fp"] for v in per.values() if not v["faces"]),
        "faceless_frames_with_fp": f"{len(fp_faceless)}/{sum(1 for it in items if not it['faces'])}",
        "fp_on_face_frames": sum(v["fp"] for v in per.values() if v["faces"]),
        "frames_missing_a_face": misses,
        "frames_with_fp": fp_faceless + fp_face,
    }


def timing(
    detectors: dict[str, tuple[Callable[[np.ndarray], list[Box]], int | None]], items: list[dict], repeat: int
) -> dict[str, dict[str, float]]:
    """Wall and process-CPU ms per frame. Detectors with the same torch thread count (None: no torch,
    timed with the first group) are interleaved frame by frame, so that load from other jobs on a
    shared machine falls on all of them alike; groups run one after the other (changing the thread
    count between calls would itself cost)."""
    import torch

    default_threads = torch.get_num_threads()
    groups: dict[int, list[str]] = {}
    first = next((t for _, t in detectors.values() if t is not None), default_threads)
    for name, (_, threads) in detectors.items():
        groups.setdefault(first if threads is None else threads, []).append(name)
    wall: dict[str, list[float]] = {n: [] for n in detectors}
    cpu: dict[str, list[float]] = {n: [] for n in detectors}
    try:
        for threads, names in groups.items():
            torch.set_num_threads(threads)
            for name in names:  # warm up (first calls allocate)
                for it in items[:3]:
                    detectors[name][0](it["image"])
            for r in range(repeat):
                for i, it in enumerate(items):
                    for k in range(len(names)):
                        name = names[(i + r + k) % len(names)]  # rotate the order too
                        t0, c0 = time.perf_counter(), time.process_time()
                        detectors[name][0](it["image"])
                        wall[name].append((time.perf_counter() - t0) * 1000)
                        cpu[name].append((time.process_time() - c0) * 1000)
    finally:
        torch.set_num_threads(default_threads)
    return {
        n: {
            "ms_median": round(statistics.median(wall[n]), 1),
            "ms_p95": pct(wall[n], 95),
            "ms_mean": round(statistics.fmean(wall[n]), 1),
            "cpu_ms_median": round(statistics.median(cpu[n]), 1),
            "cpu_ms_p95": pct(cpu[n], 95),
        }
        for n in detectors
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iou", type=float, default=0.4, help="IoU for a detection to match a labelled face")
    p.add_argument("--repeat", type=int, default=2, help="time each frame this many times")
    p.add_argument("--no-video", action="store_true", help="leave out the sample.mp4 frames")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    import torch

    from emostream.model.features.mtcnn import MTCNNDetector
    from emostream.model.features.visual import FaceDetector

    items, desc = build_dataset(video=not args.no_video)
    threads = torch.get_num_threads()
    configs = {  # name -> (MTCNNDetector kwargs, torch threads while it runs)
        "mtcnn_w640_min20_1thread": (dict(backend="torch"), 1),
        "mtcnn_w640_min40_1thread": (dict(backend="torch", min_face_size=40), 1),
        "mtcnn_w320_min20_1thread": (dict(backend="torch", detect_width=320), 1),
        "mtcnn_w640_min20_ort_1thread (MTCNNDetector default)": (dict(), 1),
        "mtcnn_w640_min40_ort_1thread": (dict(min_face_size=40), 1),
        "mtcnn_w320_min20_ort_1thread": (dict(detect_width=320), 1),
        "mtcnn_w640_min20_torch_default_threads": (dict(backend="torch"), threads),
    }
    detectors: dict[str, tuple[Callable[[np.ndarray], list[Box]], int | None]] = {
        "haar_w400 (FaceDetector default)": (FaceDetector().detect_all, None),
        "haar_w640": (FaceDetector(detect_width=640).detect_all, None),
    }
    results: dict[str, dict] = {name: {"backend": "opencv", "torch_threads": None} for name in detectors}
    for name, (kwargs, n_threads) in configs.items():
        det = MTCNNDetector(**kwargs)
        detectors[name] = (det.detect_all, n_threads)
        results[name] = {
            "backend": det.backend,
            "ort_threads": det.threads if det.backend == "onnxruntime" else None,
            "torch_threads": n_threads,  # torch: the nets' threads; onnxruntime: the box post-processing's
            "min_face_size": det.min_face_size,
            "detect_width": det.detect_width,
        }
    load_before = os.getloadavg()
    times = timing(detectors, items, args.repeat)
    for name, (detect, n_threads) in detectors.items():
        torch.set_num_threads(n_threads or threads)  # this benchmark's own process only
        try:
            results[name].update(times[name])
            results[name].update(accuracy(detect, items, args.iou))
        finally:
            torch.set_num_threads(threads)
        r = results[name]
        print(f"{name}: recall {r['recall']}, fp {r['fp_on_faceless_frames']}+{r['fp_on_face_frames']}, "
              f"{r['ms_median']} ms (p95 {r['ms_p95']}), cpu {r['cpu_ms_median']} ms", file=sys.stderr)  # fmt: skip

    out = {
        "benchmark": "face detectors: recall / false positives / ms per 640x480 frame",
        "command": "python benchmarks/face_detectors.py" + ("" if argv is None else " " + " ".join(argv)),
        "machine": {
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads_default": threads,
            "opencv": cv2.__version__,
            "cv2_threads": cv2.getNumThreads(),
            "loadavg_1_5_15_before": [round(v, 2) for v in load_before],
            "loadavg_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
        },
        "match": f"IoU >= {args.iou}, greedy one-to-one; fp = unmatched detections",
        "timing": f"each of the {len(items)} frames once per repeat ({args.repeat}) after 3 warm-up calls each; the "
        "1-thread MTCNNs (torch and onnxruntime) and the Haars interleaved frame by frame, then the "
        "default-thread torch MTCNN alone; ort_vs_torch_1thread pairs give [torch, onnxruntime]; "
        "the whole detect_all (resize, colour conversion, detection); wall ms, and process CPU ms. The box is "
        "shared: a load average above the core count means other jobs were running and wall times are high",
        "dataset": desc,
        "detectors": results,
        "ort_vs_torch_1thread": {
            ort: {
                "torch_1thread": torch_name,
                "ms_median": [results[torch_name]["ms_median"], results[ort]["ms_median"]],
                "ms_p95": [results[torch_name]["ms_p95"], results[ort]["ms_p95"]],
                "recall": [results[torch_name]["recall"], results[ort]["recall"]],
                "same_misses_and_fps": results[torch_name]["frames_missing_a_face"] == results[ort]["frames_missing_a_face"]
                and results[torch_name]["frames_with_fp"] == results[ort]["frames_with_fp"],
            }
            for ort, torch_name in (
                ("mtcnn_w640_min20_ort_1thread (MTCNNDetector default)", "mtcnn_w640_min20_1thread"),
                ("mtcnn_w640_min40_ort_1thread", "mtcnn_w640_min40_1thread"),
                ("mtcnn_w320_min20_ort_1thread", "mtcnn_w320_min20_1thread"),
            )
        },
    }  # fmt: skip
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
