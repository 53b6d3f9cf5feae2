"""The serving process, composed: `App` owns the shared models (loaded once), the one `Scheduler`
that drives every dialogue, the server's own source (a `Pipeline` over a media file or the
devices, whose events are broadcast to every watcher), browser capture (a `SessionManager`: one
dialogue per capturing connection) and the `Server`. `emostream serve` and `emostream demo` parse
their arguments (realtime/cli.py) and hand an `AppOptions` to `App.serve`.

The server's own source is built by a `source_factory(app) -> EventSource`; tests pass their
own instead of the Pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from emostream.realtime import resources
from emostream.realtime.config import PipelineConfig
from emostream.realtime.protocol import ClientMessage
from emostream.realtime.scheduler import Scheduler
from emostream.realtime.transport.ws import Server

logger = logging.getLogger(__name__)


class EventSource(Protocol):
    """The server's own source, as the app drives it.

    `start(publish)`: begin producing; `publish` is thread-safe and takes protocol messages
    (publish a `hello` first so clients learn the labels). `on_client_message`: reset from a
    client, called on the event loop (hand it to the dialogue; do not block). `wait(timeout)`:
    True once the source has ended (media played through, or failed). `close()`: stop and join.
    """

    def start(self, publish: Callable[[Mapping[str, Any]], object]) -> None: ...

    def on_client_message(self, message: ClientMessage, client_id: str) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class AppOptions:
    """What `serve` / `demo` were asked for, beyond the pipeline's own options."""

    prog: str = "emostream serve"
    media: Path | None = None  # None: the devices (or, for the demo without a microphone, the sample)
    demo: bool = False
    capture_only: bool = False  # --source browser: no source of the server's own
    once: bool = False
    open_browser: bool = False
    max_sessions: int = 4
    idle_timeout_s: float = 60.0


def microphone_available() -> bool:
    """Whether this machine has an audio input device (and PortAudio to reach it)."""
    from emostream.realtime.sources import import_sounddevice

    try:
        sd = import_sounddevice()
        return any(d.get("max_input_channels", 0) > 0 for d in sd.query_devices())
    except Exception:  # noqa: BLE001 - no PortAudio, no devices: no microphone
        return False


def pipeline_source(app: App) -> EventSource:
    """The default source: a Pipeline over the media file or the devices, on the app's shared
    models and scheduler. For the demo without a microphone: the bundled sample, in a loop unless --once."""
    from emostream.realtime.pipeline import PipelineEventSource  # lazy: heavy imports

    media, loop = app.options.media, False
    if app.options.demo and media is None:
        if microphone_available():
            logger.info("demo: using the microphone (and the camera if there is one)")
        else:
            media, loop = resources.sample_media(), not app.options.once
            logger.info("demo: no microphone here; playing the bundled sample %s%s", media,
                        " in a loop" if loop else "")
    config = dataclasses.replace(app.config, media=str(media) if media else None, realtime=True, loop=loop)
    return PipelineEventSource(config, app.shared_models().dialogue_parts(), app.scheduler)


class App:
    """Shared models, the scheduler, the server's own source, browser capture, the server."""

    def __init__(self, server: Server, config: PipelineConfig, options: AppOptions,
                 source_factory: Callable[[App], EventSource] = pipeline_source) -> None:
        self.server = server
        self.config = config
        self.options = options
        self.source_factory = source_factory
        self.scheduler = Scheduler(metrics_interval_s=config.metrics_interval_s)
        self.shared: Any = None  # SharedModels, once loaded
        self.source: EventSource | None = None
        self.manager: Any = None  # SessionManager, once capture is on
        server.capture_expected = True

    def shared_models(self) -> Any:
        """The heavy models, loaded on first use (blocking), then shared by every dialogue."""
        if self.shared is None:
            from emostream.realtime.runtime import load_shared_models

            self.shared = load_shared_models(self.config)
            self.server.health_checks["models"] = self._models_health
        return self.shared

    def _models_health(self) -> tuple[bool, str]:
        shared = self.shared
        return True, f"{shared.model.name} on {self.config.engine}; asr {self.config.asr_model}"

    def enable_capture(self) -> None:
        """Browser sessions on the shared models, driven by the one scheduler. Blocking (loads models)."""
        from emostream.realtime.sessions import SessionManager
        from emostream.realtime.worker import hello_of

        shared = self.shared_models()
        if self.source is None:  # watchers of a capture-only server still learn the labels
            parts = shared.dialogue_parts()
            self.server.set_hello(hello_of(parts["session"], self.config, parts["speakers"].mode, shared.turn_model))
        self.manager = SessionManager(shared, self.config, self.scheduler, max_sessions=self.options.max_sessions,
                                      idle_timeout_s=self.options.idle_timeout_s)
        self.server.capture = self.manager
        logger.info("browser capture on: %d session(s) at most", self.options.max_sessions)

    def _start_scheduler(self) -> None:
        if not self.scheduler.alive:
            self.scheduler.start()
            self.server.health_checks["scheduler"] = self.scheduler.health

    async def serve(self) -> int:
        """Serve until a signal (or, with `once`, until the media has played through). Prints
        `serving http://HOST:PORT/` once listening. Returns the exit status."""
        prog = self.options.prog
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
            except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
                pass
        try:
            if self.options.capture_only:  # ready before the first capturing client comes
                try:
                    await asyncio.to_thread(self.enable_capture)
                except Exception as exc:
                    logger.debug("loading the models failed", exc_info=True)
                    print(f"{prog}: error: could not load the models: {exc}", file=sys.stderr)
                    return 1
                self._start_scheduler()
            async with self.server:
                print(f"serving {self.server.url}", flush=True)
                if self.options.open_browser:
                    import webbrowser

                    webbrowser.open(self.server.url)
                if self.options.capture_only:
                    await stop.wait()
                    return 0
                return await self._serve_source(stop)
        finally:
            await asyncio.to_thread(self.close)
            for sig in handled:
                loop.remove_signal_handler(sig)

    async def _serve_source(self, stop: asyncio.Event) -> int:
        prog = self.options.prog
        try:
            self.source = await asyncio.to_thread(self.source_factory, self)
        except Exception as exc:
            logger.debug("building the source failed", exc_info=True)
            print(f"{prog}: error: could not start the pipeline: {exc}", file=sys.stderr)
            return 1
        source = self.source
        self.server.on_client_message = source.on_client_message
        if hasattr(source, "health"):
            self.server.health_checks["pipeline"] = source.health
        if self.shared is not None:  # browsers can capture beside the server's own source
            await asyncio.to_thread(self.enable_capture)
        self._start_scheduler()
        try:
            await asyncio.to_thread(source.start, self.server.publish_threadsafe)
        except Exception as exc:
            logger.debug("the event source failed to start", exc_info=True)
            print(f"{prog}: error: could not start the pipeline: {exc}", file=sys.stderr)
            return 1
        while not stop.is_set():
            ended = await asyncio.to_thread(source.wait, 0.25)
            if ended and self.options.once:
                await asyncio.sleep(0.2)  # let the last events cross over from the scheduler thread
                await self.server.drain(timeout=3.0)
                break
        return 0

    def close(self) -> None:
        """Stop the source, close every browser session, stop the scheduler. Blocking."""
        if self.source is not None:
            self.source.close()
        if self.manager is not None:
            self.manager.close_all("server stopping")
        self.scheduler.close()
