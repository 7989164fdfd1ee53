"""Which deployment answers a request: the model's running, healthy deployments in the caller's
organization, the one with the fewest requests in flight from this process, within each one's
concurrency limit.

What the database says (the candidates of a model) is read at most every `CANDIDATE_SECONDS` per
(organization, name) and cached; the requests in flight are this process's own count (several web
processes each balance their own share). A deployment that refused a connection is left out for
`DOWN_SECONDS`, so a dead server costs one failed attempt, not one per request, until its node
reports it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from django.conf import settings

from aiwm_project.db import db_sync_to_async
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from models_registry.choices import server_backend
from models_registry.models import AIModel
from nodes.choices import NodeStatus
from nodes.models import Node

CANDIDATE_SECONDS = 1.0
DOWN_SECONDS = 5.0


@dataclass(frozen=True)
class Target:
    """A deployment that can answer: where, for which model, how many at once."""

    deployment_id: str
    model_id: str
    node_id: str
    base_url: str  # the OpenAI-compatible base URL, http://HOST:PORT/v1
    backend: str
    limit: int


class NoModel(Exception):
    """The name is neither a model nor a deployment of the organization (404)."""


class NoDeployment(Exception):
    """The model exists but nothing serves it now (503)."""


def concurrency_limit(backend: str) -> int:
    limits: dict[str, int] = settings.AIWM_GATEWAY_CONCURRENCY
    return int(limits.get(backend, limits.get("", 16)))


def candidates_from_db(org_id: str, name: str) -> tuple[str, list[Target]]:
    """(modelId, its deployments that can answer now). `name` is a modelId or a deploymentId.
    Raises NoModel. Sync: the gateway runs it in a thread."""
    deployments = Deployment.objects.for_org(org_id)
    models = AIModel.objects.for_org(org_id)
    model = models.filter(model_id=name).values("model_id", "framework").first()
    if model is not None:
        rows = deployments.filter(model_id=name)
    else:
        rows = deployments.filter(deployment_id=name)
        named = rows.values_list("model_id", flat=True).first()
        model = None if named is None else models.filter(model_id=named).values("model_id", "framework").first()
        if model is None:
            raise NoModel(name)
    model_id, framework = model["model_id"], model["framework"]
    rows = rows.filter(status=DeploymentStatus.RUNNING).exclude(endpoint__isnull=True).exclude(endpoint="")
    serving = list(rows.values("deployment_id", "model_id", "node_id", "endpoint", "backend", "health_status"))
    online = set(
        Node.objects.for_org(org_id)
        .filter(node_id__in={d["node_id"] for d in serving}, status=NodeStatus.ONLINE)
        .values_list("node_id", flat=True)
    )
    targets = [
        Target(
            deployment_id=d["deployment_id"],
            model_id=d["model_id"],
            node_id=d["node_id"],
            base_url=d["endpoint"].rstrip("/"),
            backend=server_backend(d["backend"] or "", framework),
            limit=concurrency_limit(server_backend(d["backend"] or "", framework)),
        )
        for d in serving
        if d["node_id"] in online and d["health_status"] in ("healthy", "", None)
    ]
    return model_id, targets


class Router:
    """One per process: the cached candidates, the requests in flight per deployment, who is down."""

    def __init__(self) -> None:
        self._candidates: dict[tuple[str, str], tuple[float, str, list[Target]]] = {}
        self._reading: dict[tuple[str, str], asyncio.Future[tuple[str, list[Target]]]] = {}
        self._in_flight: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._freed = asyncio.Condition()
        self._turn = 0

    async def candidates(self, org_id: str, name: str) -> tuple[str, list[Target]]:
        key = (org_id, name)
        cached = self._candidates.get(key)
        if cached is not None and time.monotonic() - cached[0] < CANDIDATE_SECONDS:
            return cached[1], cached[2]
        # One read per key at a time: the requests that find the entry expired together wait for it
        # (64 clients would otherwise send 64 identical queries to the database each second).
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(db_sync_to_async(candidates_from_db)(org_id, name))
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        model_id, targets = await asyncio.shield(reading)
        if len(self._candidates) > 10_000:
            self._candidates.clear()
        self._candidates[key] = (time.monotonic(), model_id, targets)
        return model_id, targets

    def forget(self, org_id: str) -> None:
        """Read the organization's deployments again on its next request (one of them changed)."""
        for key in [k for k in self._candidates if k[0] == org_id]:
            self._candidates.pop(key, None)

    def in_flight(self, deployment_id: str) -> int:
        return self._in_flight.get(deployment_id, 0)

    def mark_down(self, deployment_id: str) -> None:
        self._down_until[deployment_id] = time.monotonic() + DOWN_SECONDS

    def _up(self, targets: list[Target], tried: set[str]) -> list[Target]:
        now = time.monotonic()
        return [t for t in targets if t.deployment_id not in tried and self._down_until.get(t.deployment_id, 0) <= now]

    async def acquire(self, targets: list[Target], tried: set[str], wait_seconds: float) -> Target | None:
        """The target with the fewest requests in flight that has room, counted as one more in flight;
        waits up to `wait_seconds` for room when every one is full; None when none is left to try."""
        deadline = time.monotonic() + wait_seconds
        async with self._freed:
            while True:
                up = self._up(targets, tried)
                if not up:
                    return None
                room = [t for t in up if self.in_flight(t.deployment_id) < t.limit]
                if room:
                    # Ties (all idle, the usual case at low load) go round in turn, not always to the first.
                    self._turn += 1
                    turn = self._turn % len(room)
                    chosen = min(
                        room,
                        key=lambda t: (self.in_flight(t.deployment_id) / t.limit, (room.index(t) - turn) % len(room)),
                    )
                    self._in_flight[chosen.deployment_id] = self.in_flight(chosen.deployment_id) + 1
                    return chosen
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("every deployment of the model is busy")
                try:
                    await asyncio.wait_for(self._freed.wait(), left)
                except TimeoutError:
                    continue

    async def release(self, target: Target) -> None:
        async with self._freed:
            count = self.in_flight(target.deployment_id) - 1
            if count > 0:
                self._in_flight[target.deployment_id] = count
            else:
                self._in_flight.pop(target.deployment_id, None)
            self._freed.notify_all()
