"""TensorRT 10 / 11 engines from the exported ONNX files: parse -> build config -> serialised engine.

Each `<part>.onnx` in a folder becomes `<part>.engine` plus its sidecar (the ONNX sidecar with a
`tensorrt` section: version, FP16 and how it was obtained, workspace, GPU, the source ONNX's
SHA-256). Builds share a timing cache file, so rebuilding is fast. TensorRT and CUDA are imported
lazily: without them every entry point raises `BackendUnavailableError` with the install hint.

FP16 by TensorRT version (detected from the API, not the version number):
- `BuilderFlag.FP16` exists (TensorRT 10): a weakly typed network with the FP16 flag, as before;
- it is gone (TensorRT 11, which builds only strongly typed networks): the network is created
  strongly typed (`NetworkDefinitionCreationFlag.STRONGLY_TYPED` where that flag exists) and FP16
  comes from the graph: the ONNX file is converted to float16 first (`emostream.export.fp16`,
  float32 I/O kept, so the engine's inputs and outputs do not change).
Attributes that exist in only one of the two versions are read with `getattr(..., None)`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emostream.export.encoders import TOKENIZER_DIR
from emostream.export.engines.base import EngineError
from emostream.export.engines.trt_engine import import_tensorrt, require_cuda
from emostream.export.onnx import ALL_PARTS
from emostream.export.sidecar import read_sidecar, write_sidecar
from emostream.model.checkpoint import file_sha256

logger = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MB = 1024
TIMING_CACHE = "timing.cache"


def _make_logger(trt: Any, verbose: bool) -> Any:
    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
            if level <= int(trt.ILogger.Severity.ERROR):
                logger.error("TensorRT: %s", msg)
            elif level == int(trt.ILogger.Severity.WARNING):
                logger.warning("TensorRT: %s", msg)
            elif verbose or level == int(trt.ILogger.Severity.INFO):
                logger.debug("TensorRT: %s", msg)

    return Logger()


def uses_fp16_flag(trt: Any) -> bool:
    """True where FP16 is a builder flag (TensorRT 10); False where networks are strongly typed
    and FP16 must be in the ONNX graph (TensorRT 11 removed `BuilderFlag.FP16`)."""
    return getattr(trt.BuilderFlag, "FP16", None) is not None


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """`create_network` flags: STRONGLY_TYPED when asked for and the enum has it (deprecated and
    ignored in TensorRT 11, where every network is strongly typed), else 0 (explicit batch is the
    only mode since TensorRT 10)."""
    if not strongly_typed:
        return 0
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    flag = getattr(creation, "STRONGLY_TYPED", None)
    return 1 << int(flag) if flag is not None else 0


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str] | None = None,
    fp16: bool = False,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    tf32: bool = False,
) -> Path:
    """Build and serialise one engine (static shapes: a one-point optimisation profile).

    TF32 is off unless asked for, so an FP32 engine matches PyTorch to ~1e-6 (TensorRT enables
    TF32 by default on Ampere and later); `fp16` allows FP16 kernels (I/O stays FP32): the FP16
    builder flag on TensorRT 10, a float16-converted graph in a strongly typed network on 11.
    """
    trt = import_tensorrt()
    torch = require_cuda()
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    side = read_sidecar(onnx_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    fp16_flag = uses_fp16_flag(trt)
    fp16_mode = None if not fp16 else ("builder_flag" if fp16_flag else "onnx_graph")
    with tempfile.TemporaryDirectory(prefix=".fp16-", dir=engine_path.parent) as tmp:
        source = onnx_path
        if fp16_mode == "onnx_graph":
            from emostream.export.fp16 import convert_file

            source = convert_file(onnx_path, Path(tmp) / onnx_path.name)
        serialized, cache_bytes, cache_path = _build(
            trt, source, engine_path, fp16_mode, not fp16_flag, workspace_mb, timing_cache, verbose, tf32
        )
    tmp_engine = engine_path.with_name(engine_path.name + ".tmp")
    tmp_engine.write_bytes(serialized)
    os.replace(tmp_engine, engine_path)
    cache_path.write_bytes(cache_bytes)

    side = dict(side)
    for key in ("format", "format_version"):
        side.pop(key, None)
    side["file"] = engine_path.name
    side["file_sha256"] = file_sha256(engine_path)
    side["tensorrt"] = {
        "version": trt.__version__,
        "fp16": bool(fp16),
        "fp16_mode": fp16_mode,  # None, "builder_flag" (TensorRT 10) or "onnx_graph" (float16 ONNX, TensorRT 11)
        "strongly_typed": not fp16_flag,
        "tf32": bool(tf32),
        "workspace_mb": int(workspace_mb),
        "device": torch.cuda.get_device_name(),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": file_sha256(onnx_path),
        "timing_cache": cache_path.name,
    }
    write_sidecar(engine_path, side)
    logger.info("built %s (fp16=%s, mode %s) from %s with TensorRT %s", engine_path, fp16, fp16_mode,
                onnx_path.name, trt.__version__)
    return engine_path


def _build(
    trt: Any,
    onnx_path: Path,
    engine_path: Path,
    fp16_mode: str | None,
    strongly_typed: bool,
    workspace_mb: int,
    timing_cache: str | os.PathLike[str] | None,
    verbose: bool,
    tf32: bool,
) -> tuple[bytes, bytes, Path]:
    """Parse `onnx_path` and build it: (serialised engine, serialised timing cache, its path)."""
    trt_logger = _make_logger(trt, verbose)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        what = f"the float16 conversion of {onnx_path.name}" if fp16_mode == "onnx_graph" else str(onnx_path)
        raise EngineError(f"TensorRT could not parse {what}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    fp16_builder_flag = getattr(trt.BuilderFlag, "FP16", None)  # TensorRT 10 only
    if fp16_mode == "builder_flag" and fp16_builder_flag is not None:
        if not getattr(builder, "platform_has_fast_fp16", True):
            logger.warning("this GPU has no fast FP16; building with FP16 anyway")
        config.set_flag(fp16_builder_flag)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            raise EngineError(f"{onnx_path.name}: input {tensor.name} has a dynamic shape {shape}")
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else engine_path.parent / TIMING_CACHE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build {onnx_path.name} (see the TensorRT errors logged above)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize()), cache_path


def build_all(
    onnx_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    fp16: bool = False,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    parts: Sequence[str] | None = None,
    verbose: bool = False,
) -> dict[str, Path]:
    """Build `<name>.engine` for every exported `<name>.onnx` in `onnx_dir` (of the kinds in
    `parts`, default all) into `out_dir`; returns name -> engine path."""
    import_tensorrt()
    require_cuda()
    src = Path(onnx_dir)
    dst = Path(out_dir) if out_dir else src
    found = [f for f in sorted(src.glob("*.onnx")) if read_sidecar(f)["kind"] in (parts or ALL_PARTS)]
    if not found:
        raise EngineError(f"no exported ONNX models in {src} (run `emostream export onnx` first)")
    tokenizer = src / TOKENIZER_DIR
    if tokenizer.is_dir() and dst.resolve() != src.resolve():
        shutil.copytree(tokenizer, dst / TOKENIZER_DIR, dirs_exist_ok=True)
    built = {}
    for path in found:
        name = path.name.removesuffix(".onnx")
        built[name] = build_engine(path, dst / f"{name}.engine", fp16, workspace_mb, dst / TIMING_CACHE, verbose)
    return built
