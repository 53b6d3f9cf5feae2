"""The I/O-free core of sending: per-client bounded queues and fan-out to every watcher.

Each client has its own bounded drop-oldest queue of outgoing messages, so a slow or stalled
client never blocks the producer or the other clients. A capturing browser's queue is not in the
fan-out: its own session's events go to it alone (`Broadcaster.send_to`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emostream.realtime import protocol

_PER_CLIENT_TYPES = frozenset({"hello", "metrics"})  # rendered for each client when sent


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One queued message: wire text, or a dict finished per client when sent (hello, metrics)."""

    type: str
    text: str | None = None
    message: Mapping[str, Any] | None = None
    droppable: bool = False  # interim predictions and metrics go first when a queue overflows


class ClientQueue:
    """Bounded drop-oldest queue of one client's outgoing messages; counts what it drops.

    On overflow the oldest droppable message (interim prediction, face, metrics) goes first, else the
    oldest message. A pending metrics snapshot is replaced by a newer one (not counted as a drop).
    """

    def __init__(self, client_id: str, maxsize: int = 256) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.client_id = client_id
        self.maxsize = maxsize
        self.interim = True
        self.fanout = True  # receives `publish`ed events (a watcher); False: a capturing client
        self.dropped = 0
        self.sent = 0
        self._items: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Outgoing) -> None:
        if self._closed:
            return
        if item.type == "metrics":
            for i, old in enumerate(self._items):
                if old.type == "metrics":
                    del self._items[i]
                    break
        if len(self._items) >= self.maxsize:
            victim = next((i for i, old in enumerate(self._items) if old.droppable), None)
            if victim is None:  # keep an unsent hello: the client needs its labels
                victim = next((i for i, old in enumerate(self._items) if old.type != "hello"), 0)
            del self._items[victim]
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def get_nowait(self) -> Outgoing | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> Outgoing | None:
        """The next message, waiting for one; None once the queue is closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        self._closed = True
        self._ready.set()


def _wire_text(event: Mapping[str, Any]) -> str:
    """`protocol.encode`, and refuse text with no UTF-8 form (a lone surrogate): a websocket cannot
    send it, and trying would fail that client's connection."""
    text = protocol.encode(event)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{event.get('type')} message is not valid Unicode: {exc.reason} at {exc.start}") from None
    return text


class Broadcaster:
    """Fans server events out to every client's queue. Never blocks; call on the event loop."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._clients: dict[str, ClientQueue] = {}
        self.published = 0
        self._departed_drops = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def dropped(self) -> int:
        """Messages dropped for slow clients, over all clients ever connected."""
        return self._departed_drops + sum(q.dropped for q in self._clients.values())

    def queues(self) -> list[ClientQueue]:
        return list(self._clients.values())

    def subscribe(self, client_id: str, first: Mapping[str, Any] | None = None, fanout: bool = True) -> ClientQueue:
        """Add a client; `first` (its hello) is queued before any later event. fanout=False: a
        capturing client, which gets only its own session's events (`deliver`), not `publish`'s."""
        if client_id in self._clients:
            raise ValueError(f"client {client_id!r} is already subscribed")
        queue = ClientQueue(client_id, self.queue_size)
        queue.fanout = fanout
        if first is not None:
            queue.put(self._item(first))
        self._clients[client_id] = queue
        return queue

    def unsubscribe(self, queue: ClientQueue) -> None:
        if self._clients.get(queue.client_id) is queue:
            del self._clients[queue.client_id]
            self._departed_drops += queue.dropped
        queue.close()

    @staticmethod
    def _item(event: Mapping[str, Any]) -> Outgoing:
        kind = event.get("type")
        if kind not in protocol.SERVER_TYPES:
            raise ValueError(f"not a server message type: {kind!r}")
        droppable = kind in ("metrics", "face") or (kind == "prediction" and not event.get("final", True))
        text = _wire_text(event)  # fail now, at the producer, rather than in a sender
        if kind in _PER_CLIENT_TYPES:
            return Outgoing(kind, message=dict(event), droppable=droppable)
        return Outgoing(kind, text=text, droppable=droppable)

    def publish(self, event: Mapping[str, Any]) -> None:
        """Queue one server message for every client (encoded once). Raises ValueError if invalid."""
        item = self._item(event)
        interim = item.type == "prediction" and item.droppable
        self.published += 1
        for queue in self._clients.values():
            if not queue.fanout or (interim and not queue.interim):
                continue
            queue.put(item)

    def deliver(self, queue: ClientQueue, event: Mapping[str, Any]) -> None:
        """One session's event for its own client (interims only if it wants them)."""
        item = self._item(event)
        if item.type == "prediction" and item.droppable and not queue.interim:
            return
        queue.put(item)

    def send_to(self, queue: ClientQueue, event: Mapping[str, Any]) -> None:
        """Queue a reply (pong, error) for one client."""
        queue.put(self._item(event))

    def render(self, item: Outgoing, queue: ClientQueue) -> str:
        """Wire text of `item` for the client of `queue`."""
        if item.text is not None:
            return item.text
        msg = dict(item.message or {})
        if item.type == "metrics":
            msg["drops"] = {**msg.get("drops", {}), "client": queue.dropped}
            msg["clients"] = self.clients
        elif item.type == "hello":
            msg["client"] = queue.client_id
            msg["interim"] = queue.interim
        return protocol.encode(msg)
