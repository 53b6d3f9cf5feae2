"""Stage 1 alone, with N past turns in the text encoder's input: MELD dev weighted F1 and time.

Fine-tunes the top --layers layers of MiniLM (or --text-encoder) with a linear head on the context input of
`emostream.model.features.context` (the current utterance first, past turns most recent first,
speakers tagged A, B, ..., pooled over the current utterance); --turns 0 is the plain sentence.
Selected on dev. Prints one JSON object.

    python benchmarks/context_probe.py --train train_sent_emo.csv --dev dev_sent_emo.csv [--turns 4] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--text-encoder", default="all-MiniLM-L6-v2", help="e.g. all-mpnet-base-v2")
    p.add_argument("--limit", type=int, help="train on the first N train dialogues only (to time an encoder)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--out", default="/tmp/context_probe.safetensors")
    args = p.parse_args(argv)

    from emostream.model import finetune_text as ft
    from emostream.model.data.records import Dataset
    from emostream.model.data.registry import load_dataset

    train = load_dataset("meld", args.train, media_dir=None, split="train")
    if args.limit:
        train = Dataset(train.name, train.split, train.labels, train.dialogues()[: args.limit])
    dev = load_dataset("meld", args.dev, media_dir=None, split="dev")
    t0 = time.time()
    result = ft.finetune_text_encoder(train, dev, args.text_encoder, args.out,
                                      ft.TextFinetuneConfig(epochs=args.epochs, max_length=args.max_length,
                                                            context_turns=args.turns, layers=args.layers,
                                                            lr=args.lr),
                                      progress=False)
    result.update(text_encoder=args.text_encoder, turns=args.turns, layers=args.layers, lr=args.lr,
                  train_utterances=train.num_utterances(), seconds=round(time.time() - t0, 1))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
