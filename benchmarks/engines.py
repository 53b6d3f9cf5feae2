"""Step and text-encoder latency: PyTorch eager vs ONNX Runtime, measured side by side.

    python benchmarks/engines.py [--checkpoint PATH] [--iters 200] [--warmup 30] [--json-out FILE]

Prints one JSON document: per backend the median and p99 latency of one streaming step (through
`StreamingEngine`, state handling included) and of one sentence through the text encoder
(batch 1, L tokens), plus the eager/ORT ratios. The two backends alternate call by call (the
order flips every iteration) on identical inputs, after a warm-up, so machine noise hits both.
Uses the bundled checkpoint when it exists, else a default-config random model (the JSON says).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostream.export.engines import BucketedTextEncoder, StreamingEngine, load_engine
from emostream.export.engines.torch_engine import TorchStepEngine
from emostream.export.onnx import export_onnx
from emostream.export.verify import DEFAULT_SENTENCES, synthetic_dialogue
from emostream.model.checkpoint import default_checkpoint_path, load_checkpoint, save_checkpoint
from emostream.model.config import ModelConfig
from emostream.model.mcncl import MCNCL


def _stats(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1e3
    return {"median_ms": round(float(np.median(ms)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4), "n": int(ms.size)}


def side_by_side(fns: dict[str, Callable[[int], Any]], iters: int, warmup: int) -> dict[str, dict[str, float]]:
    """Call every fn(i) once per iteration, flipping the order each time; time each call."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + iters):
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            t0 = time.perf_counter()
            fns[n](i)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[n].append(dt)
    return {n: _stats(v) for n, v in times.items()}


def _checkpoint(tmp: Path, path: str | None) -> tuple[Any, str]:
    if path:
        return load_checkpoint(path), f"checkpoint {path}"
    bundled = default_checkpoint_path()
    if bundled.is_file():
        return load_checkpoint(bundled), f"bundled checkpoint {bundled.name}"
    from emostream.model.features.spec import default_feature_spec

    torch.manual_seed(0)
    model = MCNCL(ModelConfig(dropout=0.0)).eval()
    saved = save_checkpoint(tmp / "random.safetensors", model, default_feature_spec().to_dict(), {"random": True})
    return load_checkpoint(saved), "no bundled checkpoint: default-config random model (all three modalities)"


def bench_step(ckpt: Any, folder: Path, iters: int, warmup: int, threads: int | None) -> dict[str, Any]:
    ort = StreamingEngine(load_engine("onnx", folder / "step.onnx", intra_op_threads=threads))
    n_threads = ort.engine.session.get_session_options().intra_op_num_threads
    torch.set_num_threads(n_threads)  # the same thread budget for both backends
    eager = StreamingEngine(TorchStepEngine(ckpt))
    dialogue = synthetic_dialogue(ort.engine.input_specs, 64, seed=0, n_parties=ort.n_parties,
                                  normalization=ckpt.model.normalization())

    def run(engine: StreamingEngine) -> Callable[[int], Any]:
        def call(i: int) -> Any:
            if i % len(dialogue) == 0:
                engine.reset()  # a new dialogue every 64 utterances
            return engine.step(dialogue[i % len(dialogue)])

        return call

    stats: dict[str, Any] = side_by_side({"torch_eager": run(eager), "onnxruntime": run(ort)}, iters, warmup)
    stats["threads"] = n_threads
    return stats


def bench_text(folder: Path, iters: int, warmup: int, threads: int | None) -> dict[str, Any]:
    """One sentence -> vector, tokenisation included: eager on the exact token count (what
    `TextFeaturizer` does for one sentence) vs the bucketed ONNX Runtime encoders; plus both at
    the fixed full length (128) on pre-tokenised input, for reference."""
    from emostream.model.features.text import load_text_module

    text = BucketedTextEncoder.load("onnx", folder, intra_op_threads=threads)
    n_threads = text.engines[0].session.get_session_options().intra_op_num_threads
    torch.set_num_threads(n_threads)  # the same thread budget for both backends
    side = text.sidecar
    module, tokenizer = load_text_module(side["ref"], normalize=bool(side.get("normalize", True)))
    full = load_engine("onnx", folder / "text_encoder.onnx", intra_op_threads=threads)
    length = int(side["max_length"])
    sentences = list(DEFAULT_SENTENCES)
    padded = [tokenizer([s], padding="max_length", truncation=True, max_length=length, return_tensors="np")
              for s in sentences]
    feeds = [{k: e[k].astype(np.int64) for k in ("input_ids", "attention_mask")} for e in padded]
    tensors = [{k: torch.from_numpy(v) for k, v in f.items()} for f in feeds]

    @torch.inference_mode()
    def eager(i: int) -> Any:
        enc = tokenizer([sentences[i % len(sentences)]], truncation=True, max_length=length, return_tensors="pt")
        return module(enc["input_ids"], enc["attention_mask"])

    def ort_bucketed(i: int) -> Any:
        return text.encode([sentences[i % len(sentences)]])

    @torch.inference_mode()
    def eager_full(i: int) -> Any:
        t = tensors[i % len(tensors)]
        return module(t["input_ids"], t["attention_mask"])

    def ort_full(i: int) -> Any:
        return full.infer(feeds[i % len(feeds)])

    stats: dict[str, Any] = side_by_side(
        {"torch_eager": eager, "onnxruntime": ort_bucketed, f"torch_eager_L{length}": eager_full,
         f"onnxruntime_L{length}": ort_full},
        iters, warmup,
    )
    stats["threads"] = n_threads
    stats["buckets"] = text.lengths
    stats["tokens_per_sentence"] = [int(e["attention_mask"].sum()) for e in padded]
    stats["note"] = ("torch_eager/onnxruntime: text -> vector incl. tokenisation, eager on the exact length, "
                     f"ORT on the smallest static bucket; *_L{length}: pre-tokenised, padded to {length}")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--text-iters", type=int, default=None, help="default: iters / 2")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both backends (default: ONNX Runtime's default per model: 1 for the "
                             "step, up to 4 for the text encoder)")
    parser.add_argument("--no-text", action="store_true")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt, source = _checkpoint(tmp, args.checkpoint)
        parts = ["step"] + ([] if args.no_text else ["text_encoder"])
        export_onnx(ckpt, tmp / "onnx", parts=parts)
        result: dict[str, Any] = {
            "model": source,
            "params": sum(p.numel() for p in ckpt.model.parameters()),
            "modalities": list(ckpt.config.modalities),
            "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
                        "processor": platform.processor() or platform.machine(), "python": sys.version.split()[0],
                        "torch": torch.__version__},
            "iters": args.iters,
            "warmup": args.warmup,
            "step": bench_step(ckpt, tmp / "onnx", args.iters, args.warmup, args.threads),
        }
        if not args.no_text:
            result["text_encoder"] = bench_text(tmp / "onnx", args.text_iters or max(1, args.iters // 2),
                                                args.warmup, args.threads)
    ratios = {}
    for part in ("step", "text_encoder"):
        if part in result:
            r = result[part]
            ratios[f"{part}_median_eager_over_ort"] = round(r["torch_eager"]["median_ms"] / r["onnxruntime"]["median_ms"], 3)
            ratios[f"{part}_p99_eager_over_ort"] = round(r["torch_eager"]["p99_ms"] / r["onnxruntime"]["p99_ms"], 3)
    result["ratios"] = ratios
    result["target"] = "onnxruntime >= 1.8x faster than eager (median) for the step and the text encoder"
    result["target_met"] = all(v >= 1.8 for k, v in ratios.items() if "median" in k)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
