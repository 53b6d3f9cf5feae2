"""The `emostream` console script: one entry point, one subcommand per job.

Every subcommand is a `main(argv: list[str] | None = None) -> int` in its own module, imported
only when it is used, so `emostream --help` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("emostream.realtime.server", "demo_main"),
    "serve": ("emostream.realtime.server", "main"),
    "run": ("emostream.realtime.pipeline", "main"),
    "train": ("emostream.model.train", "main"),
    "evaluate": ("emostream.model.evaluate", "main"),
    "extract": ("emostream.model.data.extract", "main"),
    "export": ("emostream.export.cli", "main"),
    "bench": ("emostream.realtime.bench", "main"),
}

USAGE = "usage: emostream {" + ",".join(SUBCOMMANDS) + "} [options]  (emostream COMMAND --help for each)"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "--help-commands"):
        sys.stdout.write(USAGE + "\n")
        return 0
    command, rest = args[0], args[1:]
    if command not in SUBCOMMANDS:
        sys.stderr.write(f"emostream: unknown command {command!r}\n{USAGE}\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per ASR call otherwise
    module_name, func_name = SUBCOMMANDS[command]
    module = importlib.import_module(module_name)
    return int(getattr(module, func_name)(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
