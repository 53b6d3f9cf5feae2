"""Model deployments: one Ray Serve deployment per kind of model, each batching the calls of every
session (of every ingress replica) with `@serve.batch`; and `RayCall`, how a session reaches one.

A deployment loads only its own model (`emostream.realtime.calls.load_call`). Its batch window is
`batch_wait_s` (a batch goes when full or after that long) and its size `max_batch_size`; every
call in flight holds one `max_ongoing_requests` slot, so that is set above the batch size (Ray's
default, 5, would cap the batches).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from typing import Any

from ray import serve

from emostream.realtime.cluster.config import ModelDeploymentConfig

logger = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 0})
class ModelServer:
    """One kind of model (`kind`), loaded once in this replica, serving batches."""

    def __init__(self, kind: str, pipeline_config: Any, settings: ModelDeploymentConfig) -> None:
        from emostream.realtime.calls import load_call

        self.kind = kind
        t0 = time.perf_counter()
        self.call = load_call(kind, pipeline_config)
        self.info = self.call.describe()
        self.batches: collections.Counter[int] = collections.Counter()  # batch size -> how many ran
        self.busy_s = 0.0
        self.run.set_max_batch_size(settings.max_batch_size)
        self.run.set_batch_wait_timeout_s(settings.batch_wait_s)
        logger.info("model server %s ready in %.1f s", kind, time.perf_counter() - t0)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def run(self, items: list[Any]) -> list[Any]:
        self.batches[len(items)] += 1
        t0 = time.perf_counter()
        try:
            return await asyncio.to_thread(self.call, items)  # the loop keeps collecting the next batch
        finally:
            self.busy_s += time.perf_counter() - t0

    async def __call__(self, item: Any) -> Any:
        return await self.run(item)

    def describe(self) -> dict[str, Any]:
        return self.info

    def stats(self) -> dict[str, Any]:
        """Batch sizes reached (size -> batches) and the time spent in the model."""
        return {"kind": self.kind, "batches": dict(self.batches), "busy_s": round(self.busy_s, 3)}


def model_deployment(kind: str, pipeline_config: Any, settings: ModelDeploymentConfig) -> Any:
    """The bound deployment of one kind of model, named after it."""
    scaling: dict[str, Any] = (
        {"autoscaling_config": {"min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
                                "target_ongoing_requests": settings.target_ongoing_requests}}
        if settings.max_replicas > settings.min_replicas else {"num_replicas": settings.min_replicas})
    return ModelServer.options(name=kind, max_ongoing_requests=settings.max_ongoing_requests(),
                               **scaling).bind(kind, pipeline_config, settings)


class RayCall:
    """A `ModelCall` over a model deployment's handle. Call it from a plain thread (the ingress's
    scheduler), never from an event loop: it waits for the results. Every item goes as its own
    request, so the deployment batches them with the other sessions' items."""

    def __init__(self, handle: Any, kind: str, timeout_s: float) -> None:
        self.handle = handle
        self.kind = kind
        self.timeout_s = timeout_s
        self._info: dict[str, Any] | None = None

    def __call__(self, items: Sequence[Any]) -> list[Any]:
        responses = [self.handle.remote(item) for item in items]
        return [r.result(timeout_s=self.timeout_s) for r in responses]

    def describe(self) -> dict[str, Any]:
        if self._info is None:  # the replica may still be loading its model: wait for it
            self._info = self.handle.describe.remote().result(timeout_s=max(120.0, self.timeout_s))
        return dict(self._info)

    def stats(self) -> dict[str, Any]:
        return self.handle.stats.remote().result(timeout_s=self.timeout_s)
