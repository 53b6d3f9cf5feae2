"""`emostream export {onnx,tensorrt,verify,check}`.

  emostream export onnx --checkpoint PATH --out DIR [--parts step,text_encoder,frame_backbone]
  emostream export tensorrt --onnx DIR --out DIR [--fp16] [--workspace MB]
  emostream export verify DIR [--steps N] [--json] [--engine onnx|tensorrt]
  emostream export check DIR        (TensorRT operator list + static shapes, no GPU needed)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emostream export", description="Export MCN-CL to ONNX / TensorRT and check it.")
    sub = p.add_subparsers(dest="command", required=True)

    o = sub.add_parser("onnx", help="export the step model and the feature encoders to ONNX")
    o.add_argument("--checkpoint", type=Path, default=None, help="checkpoint .safetensors (default: the bundled one)")
    o.add_argument("--out", type=Path, required=True, help="output folder")
    o.add_argument("--parts", default=None,
                   help="comma list of step,text_encoder,frame_backbone (default: the step + the encoders "
                        "of the trained modalities)")
    o.add_argument("--opset", type=int, default=None)
    o.add_argument("--text-model", default=None, help="text encoder reference (default: the feature spec's)")
    o.add_argument("--text-length", type=int, default=None, help="max token length (default: the spec's, 128)")
    o.add_argument("--text-buckets", default=None,
                   help="comma list of shorter static token lengths also exported (default 16,32,64; '' for none)")
    o.add_argument("--backbone", default=None, help="frame backbone reference (default: the feature spec's)")
    o.add_argument("--backbone-batch", type=int, default=None, help="frames per call (default: max_frames)")
    o.add_argument("--no-check", action="store_true", help="skip the TensorRT operator/static-shape check")

    t = sub.add_parser("tensorrt", help="build TensorRT engines from an ONNX export (needs a GPU)")
    t.add_argument("--onnx", type=Path, required=True, help="folder written by `emostream export onnx`")
    t.add_argument("--out", type=Path, default=None, help="output folder (default: the ONNX folder)")
    t.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    t.add_argument("--workspace", type=int, default=None, help="builder workspace in MB (default 1024)")
    t.add_argument("--parts", default=None, help="comma list of parts to build (default: all found)")
    t.add_argument("--verbose", action="store_true")

    v = sub.add_parser("verify", help="parity of an export with PyTorch over a synthetic dialogue")
    v.add_argument("dir", type=Path)
    v.add_argument("--steps", type=int, default=30)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--engine", choices=("onnx", "tensorrt"), default="onnx")
    v.add_argument("--checkpoint", type=Path, default=None, help="default: the one named in the sidecar")
    v.add_argument("--parts", default=None, help="comma list: step is always checked; text_encoder,frame_backbone")
    v.add_argument("--tolerance", type=float, default=None)
    v.add_argument("--json", action="store_true", help="print one line of JSON")

    c = sub.add_parser("check", help="static TensorRT check of every ONNX file in a folder")
    c.add_argument("dir", type=Path)
    return p


def _parts(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _cmd_onnx(args: argparse.Namespace) -> int:
    from emostream.export.onnx import DEFAULT_OPSET, export_onnx
    from emostream.export.trt_ops import TensorRTCompatibilityError, check_tensorrt_compatible

    done = export_onnx(
        args.checkpoint, args.out, parts=_parts(args.parts), opset=args.opset or DEFAULT_OPSET,
        text_ref=args.text_model, text_max_length=args.text_length,
        text_buckets=None if args.text_buckets is None else [int(b) for b in _parts(args.text_buckets) or []],
        backbone_ref=args.backbone,
        backbone_batch=args.backbone_batch,
    )
    rc = 0
    for part, path in done.items():
        status = "exported"
        if not args.no_check:
            try:
                check_tensorrt_compatible(path, part)
                status += ", TensorRT-compatible (ops on the list, static shapes)"
            except TensorRTCompatibilityError as e:
                status += f", NOT TensorRT-compatible: {e}"
                rc = 1
        print(f"{part}: {path} ({status})")
    return rc


def _cmd_tensorrt(args: argparse.Namespace) -> int:
    from emostream.export.tensorrt import DEFAULT_WORKSPACE_MB, build_all

    built = build_all(args.onnx, args.out, fp16=args.fp16, workspace_mb=args.workspace or DEFAULT_WORKSPACE_MB,
                      parts=_parts(args.parts), verbose=args.verbose)
    for part, path in built.items():
        print(f"{part}: {path}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from emostream.export.verify import verify_export

    parts = _parts(args.parts)
    report = verify_export(args.dir, steps=args.steps, seed=args.seed, engine=args.engine,
                           checkpoint=args.checkpoint, parts=parts, tolerance=args.tolerance)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(f"{args.engine} vs torch over {report['steps']} steps: max |dp| = {report['max_abs_diff']:.3g}, "
              f"argmax agreement {report['argmax_agreement']:.3f}")
        for part in ("text_encoder", "text_encoder_bucketed", "frame_backbone"):
            if f"{part}_max_abs_diff" in report:
                print(f"{part}: max |diff| = {report[f'{part}_max_abs_diff']:.3g}")
        print("OK" if report["ok"] else f"FAILED (tolerance {report['tolerance']})")
    return 0 if report["ok"] else 1


def _cmd_check(args: argparse.Namespace) -> int:
    from emostream.export.trt_ops import TensorRTCompatibilityError, check_tensorrt_compatible

    files = sorted(Path(args.dir).glob("*.onnx"))
    if not files:
        print(f"no .onnx files in {args.dir}", file=sys.stderr)
        return 2
    rc = 0
    for path in files:
        try:
            check_tensorrt_compatible(path, path.name)
            print(f"{path.name}: ok")
        except TensorRTCompatibilityError as e:
            print(str(e))
            rc = 1
    return rc


def main(argv: list[str] | None = None) -> int:
    from emostream.export.engines.base import EngineError
    from emostream.export.sidecar import SidecarError
    from emostream.model.checkpoint import CheckpointError

    args = _parser().parse_args(argv)
    handlers = {"onnx": _cmd_onnx, "tensorrt": _cmd_tensorrt, "verify": _cmd_verify, "check": _cmd_check}
    try:
        return handlers[args.command](args)
    except (EngineError, SidecarError, CheckpointError, FileNotFoundError) as e:
        print(f"emostream export {args.command}: {e}", file=sys.stderr)
        return 2
