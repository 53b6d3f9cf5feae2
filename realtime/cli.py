"""The `emostream` console script: one entry point, one subcommand per job, and the realtime
commands themselves (`run`, `serve`, `demo`): their arguments, and the glue from arguments to a
pipeline, a server and browser sessions.

Every subcommand is a `main(argv: list[str] | None = None) -> int`, imported only when it is
used, so `emostream --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from emostream.realtime import privacy, protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.protocol import ClientMessage
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





def microphone_available() -> bool:
    """Whether this machine has an audio input device (and PortAudio to reach it)."""
    from emostream.realtime.sources import import_sounddevice

    try:
        sd = import_sounddevice()
        return any(d.get("max_input_channels", 0) > 0 for d in sd.query_devices())
    except Exception:  # noqa: BLE001 - no PortAudio, no devices: no microphone
        return False


def build_event_source(args: argparse.Namespace) -> EventSource:
    """For `emostream serve` and `emostream demo`: the pipeline of the server's own source."""
    from emostream.realtime.pipeline import PipelineEventSource  # lazy: heavy imports

    media = getattr(args, "media", None)
    loop = False
    if getattr(args, "demo", False) and media is None:
        if microphone_available():
            logger.info("demo: using the microphone (and the camera if there is one)")
        else:
            media = default_media()
            loop = not args.once
            logger.info("demo: no microphone here; playing the bundled sample %s%s", media,
                        " in a loop" if loop else "")
    args.media = media
    from emostream.realtime.runtime import load_shared_models

    config = config_from_args(args, realtime=True, loop=loop)
    args.shared = load_shared_models(config)  # browser sessions share these models too
    return PipelineEventSource(config, args.shared.dialogue_parts())


# ---------------------------------------------------------------------------------------------
# `emostream serve` / `emostream demo`


class EventSource(Protocol):
    """What `build_event_source(args)` returns.

    `start(publish)`: begin producing; `publish` is thread-safe and takes protocol messages
    (publish a `hello` first so clients learn the labels). `on_client_message`: reset/config from
    a client, called on the event loop (hand it to the pipeline thread; do not block).
    `wait(timeout)`: True once the source has ended (media played through, or failed).
    `close()`: stop and join threads.
    """

    def start(self, publish: Callable[[Mapping[str, Any]], object]) -> None: ...

    def on_client_message(self, message: ClientMessage, client_id: str) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...


def default_media() -> Path:
    """The bundled sample dialogue the demo plays without devices (see `emostream.realtime.resources`)."""
    from emostream.realtime import resources

    return resources.sample_media()


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
    parser.add_argument("--max-sessions", type=int, default=4,
                        help="capturing browser sessions at most (more get the error `busy`; default 4)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="close a capturing session after this many seconds without media (default 60)")
    parser.add_argument("--operator-token", default=None,
                        help="if set, resetting the shared (watched) session needs ?operator=TOKEN on /ws")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: serve https and wss")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    add_model_arguments(parser)
    parser.set_defaults(demo=demo)
    return parser


def _load_event_source_factory() -> Callable[[argparse.Namespace], EventSource]:
    return build_event_source


async def _run(server: Server, args: argparse.Namespace, factory: Callable[[argparse.Namespace], EventSource]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    source: EventSource | None = None
    scheduler: Any = None
    try:
        if getattr(args, "source", None) == "browser":  # ready before the first capturing client comes
            try:
                scheduler = await asyncio.to_thread(_enable_capture, server, args, None)
            except Exception as exc:
                logger.debug("loading the models failed", exc_info=True)
                print(f"{args.prog}: error: could not load the models: {exc}", file=sys.stderr)
                return 1
        async with server:
            print(f"serving {server.url}", flush=True)
            if args.open:
                import webbrowser

                webbrowser.open(server.url)
            if scheduler is not None:
                await stop.wait()
                return 0
            try:
                source = await asyncio.to_thread(factory, args)
            except Exception as exc:
                logger.debug("build_event_source failed", exc_info=True)
                print(f"{args.prog}: error: could not start the pipeline: {exc}", file=sys.stderr)
                return 1
            server.on_client_message = source.on_client_message
            if hasattr(source, "health"):
                server.health_checks["pipeline"] = source.health
            if getattr(args, "shared", None) is not None:  # browsers can capture beside the shared source
                scheduler = await asyncio.to_thread(_enable_capture, server, args, args.shared)
            try:
                await asyncio.to_thread(source.start, server.publish_threadsafe)
            except Exception as exc:
                logger.debug("the event source failed to start", exc_info=True)
                print(f"{args.prog}: error: could not start the pipeline: {exc}", file=sys.stderr)
                return 1
            while not stop.is_set():
                ended = await asyncio.to_thread(source.wait, 0.25)
                if ended and args.once:
                    await asyncio.sleep(0.2)  # let the last events cross over from the pipeline thread
                    await server.drain(timeout=3.0)
                    break
            return 0
    finally:
        if scheduler is not None:
            await asyncio.to_thread(scheduler.close)
        if source is not None:
            await asyncio.to_thread(source.close)
        for sig in handled:
            loop.remove_signal_handler(sig)


def _enable_capture(server: Server, args: argparse.Namespace, shared: Any) -> Any:
    """Browser sessions on the server (models loaded once, or the shared source's): the Scheduler."""
    from emostream.realtime.runtime import load_shared_models
    from emostream.realtime.scheduler import Scheduler
    from emostream.realtime.sessions import SessionManager

    config = config_from_args(args, realtime=True)
    if shared is None:
        shared = load_shared_models(config)
        model = shared.model
        server.set_hello(protocol.hello(labels=model.labels, model=getattr(model, "name", "mcncl"),
                                        modalities=model.modalities))
    manager = SessionManager(shared, config, max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout)
    scheduler = Scheduler(manager).start()
    server.health_checks["sessions"] = scheduler.health
    server.capture = manager
    logger.info("browser capture on: %d session(s) at most", args.max_sessions)
    return scheduler


def serve_main(argv: list[str] | None = None, *, prog: str = "emostream serve", demo: bool = False) -> int:
    """`emostream serve` (and `emostream demo` with demo=True). Prints `serving http://HOST:PORT/`."""
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
    if args.max_sessions < 1:
        print(f"{prog}: error: --max-sessions must be at least 1", file=sys.stderr)
        return 2
    from emostream.realtime.transport.tls import TlsConfigError, server_context

    try:
        tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert is not None else None
        server = Server(args.host, args.port, token=args.token, origins=args.allow_origin, web_root=args.web_root,
                        operator_token=args.operator_token, tls=tls)
        server.capture_expected = True
    except (ServerConfigError, TlsConfigError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        factory = _load_event_source_factory()
    except ImportError as exc:
        print(
            f"{prog}: error: the realtime pipeline is not available "
            f"(emostream.realtime.pipeline.build_event_source): {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        return asyncio.run(_run(server, args, factory))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # e.g. the port is in use
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


def demo_main(argv: list[str] | None = None) -> int:
    """`emostream demo`: `serve` with the bundled sample dialogue as the default media."""
    return serve_main(argv, prog="emostream demo", demo=True)


if __name__ == "__main__":
    raise SystemExit(main())
