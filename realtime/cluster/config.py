"""The cluster's settings: one file (YAML or JSON) with the command's flags over it.

```yaml
ingress:
  replicas: 2                 # ingress replicas (each holds sessions; at most one a node)
  sessions_per_replica: 4     # capturing sessions a replica takes; more get `busy`
  graceful_shutdown_s: 5      # a replica stopped alone cuts its open sessions after this (the page reconnects)
  one_per_node: false         # at most one ingress replica a node
models:                       # per kind: asr, turn, speaker, text, face, step
  asr: {min_replicas: 1, max_replicas: 2, max_batch_size: 8, batch_wait_s: 0.02}
call_timeout_s: 3             # a model call not answered by then fails (its final is flagged)
proxy_location: HeadOnly      # or EveryNode: a proxy on every node, behind your load balancer
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from emostream.realtime.calls import KINDS

DEFAULT_BATCH = {"asr": 8, "turn": 8, "speaker": 16, "text": 16, "face": 16, "step": 16}


@dataclass(frozen=True)
class ModelDeploymentConfig:
    min_replicas: int = 1
    max_replicas: int = 1
    max_batch_size: int = 8
    batch_wait_s: float = 0.02  # the batch window: a batch goes when full or after this long
    target_ongoing_requests: float = 4.0  # autoscaling: replicas are added above this many calls in flight

    def max_ongoing_requests(self) -> int:
        """Enough calls in flight for a full batch plus the next one (Ray's default, 5, caps batches)."""
        return 2 * self.max_batch_size


@dataclass(frozen=True)
class IngressConfig:
    replicas: int = 1
    sessions_per_replica: int = 4
    graceful_shutdown_s: float = 5.0
    one_per_node: bool = False  # at most one replica a node (spreads the sessions over the nodes)

    def max_ongoing_requests(self) -> int:
        """Every open websocket holds a slot: the sessions, plus room for watchers, /healthz and the
        page (a session beyond `sessions_per_replica` is answered `busy` by the replica itself)."""
        return self.sessions_per_replica + 16


@dataclass(frozen=True)
class ClusterConfig:
    ingress: IngressConfig = field(default_factory=IngressConfig)
    models: dict[str, ModelDeploymentConfig] = field(
        default_factory=lambda: {k: ModelDeploymentConfig(max_batch_size=DEFAULT_BATCH[k]) for k in KINDS})
    call_timeout_s: float = 3.0  # a call waits this long (a replica restarting); then its final is flagged
    proxy_location: str = "HeadOnly"  # HTTP proxies: HeadOnly (one address) or EveryNode (behind a load balancer)

    @classmethod
    def load(cls, path: str | Path | None) -> ClusterConfig:
        """The defaults, with the file's settings over them (unknown keys are an error)."""
        base = cls()
        if path is None:
            return base
        text = Path(path).read_text()
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
        return base.merged(data, str(path))

    def merged(self, data: dict[str, Any], where: str = "the cluster config") -> ClusterConfig:
        unknown = set(data) - {"ingress", "models", "call_timeout_s", "proxy_location"}
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {sorted(unknown)}")
        ingress = _replace(self.ingress, data.get("ingress") or {}, f"{where}: ingress")
        models = dict(self.models)
        for kind, settings in (data.get("models") or {}).items():
            if kind not in KINDS:
                raise ValueError(f"{where}: unknown model kind {kind!r} (one of {KINDS})")
            models[kind] = _replace(models[kind], settings or {}, f"{where}: models.{kind}")
        out = replace(self, ingress=ingress, models=models,
                      call_timeout_s=float(data.get("call_timeout_s", self.call_timeout_s)),
                      proxy_location=str(data.get("proxy_location", self.proxy_location)))
        out.check()
        return out

    def check(self) -> None:
        if self.ingress.replicas < 1 or self.ingress.sessions_per_replica < 1:
            raise ValueError("the ingress needs at least one replica and one session a replica")
        for kind, m in self.models.items():
            if not 1 <= m.min_replicas <= m.max_replicas:
                raise ValueError(f"models.{kind}: need 1 <= min_replicas <= max_replicas")
            if m.max_batch_size < 1 or not 0 <= m.batch_wait_s <= 1.0:
                raise ValueError(f"models.{kind}: max_batch_size >= 1 and batch_wait_s in [0, 1] s")
        if self.proxy_location not in ("HeadOnly", "EveryNode"):
            raise ValueError(f"proxy_location must be HeadOnly or EveryNode, got {self.proxy_location!r}")
        if not self.call_timeout_s > 0:
            raise ValueError("call_timeout_s must be > 0")


def _replace(obj: Any, settings: dict[str, Any], where: str) -> Any:
    names = {f.name: f.type for f in fields(obj)}
    unknown = set(settings) - set(names)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {sorted(unknown)}")
    kinds = {f.name: type(getattr(obj, f.name)) for f in fields(obj)}
    return replace(obj, **{k: kinds[k](v) for k, v in settings.items()})
