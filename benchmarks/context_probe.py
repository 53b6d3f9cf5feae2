"""A probe for issue 12 (not yet a feature): does putting past turns, with speaker tags, into the
text encoder's own input help stage 1 (fine-tuning MiniLM's top 4 layers with a linear head,
selected on MELD dev weighted F1)?

Each utterance's input is "A: current [SEP] B: previous [SEP] A: the one before ..." (most recent
first, so truncation at --max-length drops the oldest; speakers tagged A, B, ... by order of
appearance in the dialogue, as a live session can do), mean-pooled as today. --turns 0 is today's
input. Never a future turn. Prints one JSON object (stage 1's dev figures and time).

    python benchmarks/context_probe.py --train train_sent_emo.csv --dev dev_sent_emo.csv [--turns 4] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default="/tmp/context_probe.safetensors")
    args = p.parse_args(argv)

    from emostream.model import finetune_text as ft
    from emostream.model.data.registry import load_dataset

    def with_context(dataset: Any) -> tuple[list[str], np.ndarray]:
        texts, labels = [], []
        for d in dataset.dialogues():
            tags: dict[str, str] = {}
            for u in d.utterances:
                tags.setdefault(u.speaker, "ABCDEFGHIJ"[min(len(tags), 9)])
            for i, u in enumerate(d.utterances):
                y = dataset.label_index(u.label)
                if y < 0:
                    continue
                past = d.utterances[max(0, i - args.turns):i][::-1]  # most recent first; never a future turn
                parts = [f"{tags[u.speaker]}: {u.text}"] + [f"{tags[q.speaker]}: {q.text}" for q in past]
                texts.append(" [SEP] ".join(parts) if args.turns else u.text)
                labels.append(y)
        return texts, np.asarray(labels, dtype=np.int64)

    ft._utterances = with_context  # the probe swaps only the input builder of stage 1
    train = load_dataset("meld", args.train, media_dir=None, split="train")
    dev = load_dataset("meld", args.dev, media_dir=None, split="dev")
    t0 = time.time()
    result = ft.finetune_text_encoder(train, dev, "all-MiniLM-L6-v2", args.out,
                                      ft.TextFinetuneConfig(epochs=args.epochs, max_length=args.max_length),
                                      progress=False)
    result.update(turns=args.turns, max_length=args.max_length, seconds=round(time.time() - t0, 1))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
