"""Live events for browsers: what changed in the fleet, as it changes (`GET /api/events`).

Services announce a change with `publish()`; it goes out when their transaction commits (a
rolled-back change announces nothing). Each web process keeps the latest AIWM_EVENTS_WINDOW events
in a ring, for subscribers that reconnect with `Last-Event-ID`, and hands each new event to its
subscribers (`console.events` streams them as Server-Sent Events).

With REDIS_URL the events travel through one Redis stream (XADD, trimmed to the window): every web
process reads it with one blocking XREAD, so a change made by any process (a web worker, a Celery
worker) reaches subscribers on all of them, and the stream ids are the event ids — a subscriber
that reconnects to another process resumes where it was. A stream rather than plain pub/sub for
exactly that: pub/sub forgets, and resuming across processes needs the window in Redis. Without
Redis (the embedded default, one process) events are handed over in this process.

Delivery to a browser is best effort, but never silently partial: a subscriber that falls further
behind than its queue is dropped (it reconnects and resumes from the window), and one that asks
for an event older than the window gets `reset` (reload the state, then follow again).

This module knows no app: an event is a type, an organization and a JSON object.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import queue
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import transaction

from aiwm_project.datetimes import format_datetime
from aiwm_project.naming import camelize

logger = logging.getLogger("aiwm.live_events")


@dataclass(frozen=True)
class LiveEvent:
    id: str
    org_id: str
    type: str
    data: dict[str, Any]  # type, the entity's _id and business id, orgId, the changed fields

    def order(self) -> tuple[int, int]:
        return _order(self.id) or (0, 0)


def _order(event_id: str) -> tuple[int, int] | None:
    """Event ids as comparable pairs: Redis stream ids (`ms-seq`) or this process's (`boot:seq`)."""
    for separator, base in ((":", 16), ("-", 10)):
        head, found, tail = event_id.partition(separator)
        if found:
            try:
                return int(head, base), int(tail)
            except ValueError:
                return None
    return None


def fields(changes: dict[str, Any]) -> dict[str, Any]:
    """Model field changes as an event's fields: camelCase names, date-times as the API writes them."""
    return {camelize(k): format_datetime(v) if isinstance(v, datetime) else v for k, v in changes.items()}


def publish(org_id: str, type: str, data: dict[str, Any]) -> None:
    """Announce a change to the organization's subscribers once the current transaction commits
    (at once outside one). `data`: the entity's `_id`, its business id and the changed fields."""
    payload = {"type": type, "orgId": org_id, **data}
    transaction.on_commit(functools.partial(hub.send, org_id, type, payload))


def publish_many(org_id_and_data: Iterable[tuple[str, dict[str, Any]]], type: str) -> None:
    """`publish` for a batch (the telemetry flush's heartbeats): one commit hook for all of them."""
    batch = [(org_id, {"type": type, "orgId": org_id, **data}) for org_id, data in org_id_and_data]
    if batch:
        transaction.on_commit(functools.partial(hub.send_many, type, batch))


@dataclass(eq=False)
class Subscription:
    """One browser's stream: its organization (None: every organization, the admin's dashboard),
    and a bounded queue on its event loop."""

    org_id: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[LiveEvent | None] = field(default_factory=lambda: asyncio.Queue(settings.AIWM_EVENTS_QUEUE))
    overflowed: bool = False

    def wants(self, event: LiveEvent) -> bool:
        return self.org_id is None or self.org_id == event.org_id

    def put(self, event: LiveEvent) -> None:
        """On the subscriber's loop."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too far behind: end the stream (None) so the browser reconnects and resumes from
            # the window, rather than queueing without bound or skipping events unannounced.
            self.overflowed = True
            while not self.queue.empty():  # make room for the end marker
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class Hub:
    """This process's ring of recent events and its subscribers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ring: deque[LiveEvent] = deque(maxlen=settings.AIWM_EVENTS_WINDOW)
        self._subscribers: set[Subscription] = set()
        self._boot = uuid.uuid4().hex[:8]  # ids of an earlier process life are not resumable here
        self._seq = 0
        self._reader: asyncio.Task[None] | None = None
        self._reader_ready = asyncio.Event()
        self._sender: threading.Thread | None = None
        self._outgoing: queue.SimpleQueue[tuple[str, list[tuple[str, dict[str, Any]]]]] = queue.SimpleQueue()
        self._read_from = "$"

    # --- producing (sync, any thread: a service's commit hook) ---------------------------------

    def send(self, org_id: str, type: str, payload: dict[str, Any]) -> None:
        self.send_many(type, [(org_id, payload)])

    def send_many(self, type: str, batch: list[tuple[str, dict[str, Any]]]) -> None:
        if settings.REDIS_URL:
            # Handed to one sender thread that writes whatever has queued up in one pipeline:
            # the committing thread (a node's result on the engine's path) does not wait on Redis.
            self._outgoing.put((type, batch))
            self._ensure_sender()
            return  # this process hears its own events back through the stream, like the others
        with self._lock:
            events = []
            for org_id, payload in batch:
                self._seq += 1
                events.append(LiveEvent(f"{self._boot}:{self._seq}", org_id, type, payload))
        self._deliver(events)

    def _ensure_sender(self) -> None:
        with self._lock:
            if self._sender is None or not self._sender.is_alive():
                self._sender = threading.Thread(target=self._send_forever, name="live-events", daemon=True)
                self._sender.start()

    def _send_forever(self) -> None:
        while True:
            items = [self._outgoing.get()]
            while len(items) < 500 and not self._outgoing.empty():
                items.append(self._outgoing.get_nowait())
            try:
                with _redis(settings.REDIS_URL).pipeline(transaction=False) as pipe:
                    for type, batch in items:
                        for org_id, payload in batch:
                            fields = {"org": org_id, "type": type, "data": json.dumps(payload, default=str)}
                            pipe.xadd(_stream(), fields, maxlen=settings.AIWM_EVENTS_WINDOW, approximate=True)  # type: ignore[arg-type]
                    pipe.execute()
            except redis.RedisError:  # the changes are committed; only their announcements are lost
                logger.exception("live events: Redis refused %d batch(es)", len(items))

    def _deliver(self, events: list[LiveEvent]) -> None:
        """Keep the events for resuming and hand them to each subscriber's loop: one wake-up per
        loop (not per subscriber), the fan-out itself runs there."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscription]] = {}
        with self._lock:
            self._ring.extend(events)
            for subscriber in self._subscribers:
                by_loop.setdefault(subscriber.loop, []).append(subscriber)
        for loop, subscribers in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_fan_out, events, subscribers)

    # --- consuming (async, on a web process's event loop) --------------------------------------

    async def subscribe(self, org_id: str | None, last_event_id: str | None) -> tuple[Subscription, list[LiveEvent]]:
        """Register a subscriber; returns it with what it missed since `last_event_id` (a `reset`
        event when that is older than the window or not an id of this installation)."""
        subscription = Subscription(org_id, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(subscription)
            ring = list(self._ring)
        if settings.REDIS_URL:
            await self._ensure_reader()
        if not last_event_id:
            return subscription, []
        missed = await self._since(last_event_id, ring)
        if missed is None:
            reset = LiveEvent(last_event_id, org_id or "", "reset", {"type": "reset", "reason": "window"})
            return subscription, [reset]
        return subscription, [e for e in missed if subscription.wants(e)]

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    async def _since(self, last_event_id: str, ring: list[LiveEvent]) -> list[LiveEvent] | None:
        last = _order(last_event_id)
        if last is None:
            return None
        newer = [e for e in ring if e.order() > last]
        if any(e.id == last_event_id for e in ring):
            return newer
        if not settings.REDIS_URL:
            return None  # not in this process's window: gone, or from before a restart
        client = _aioredis(settings.REDIS_URL)
        try:
            # redis-py's stubs type replies as unions of bytes, str and None: they are bytes here.
            first: Any = await client.xrange(_stream(), count=1)
            oldest = _order(first[0][0].decode()) if first else None
            if oldest is None or oldest > last:
                return None  # trimmed past it
            rows: Any = await client.xrange(_stream(), min=f"({last_event_id}", count=settings.AIWM_EVENTS_WINDOW)
        except redis.RedisError:
            logger.exception("live events: replay from Redis failed")
            return None
        return [_from_stream(raw_id, fields) for raw_id, fields in rows]

    async def _ensure_reader(self) -> None:
        """Start this process's reader on the running loop, unless one runs, and wait until it
        knows where to read from (the stream's newest id at that moment), so nothing published
        after the subscription is missed. The task is created before any await: subscribers that
        arrive together share one reader (two would deliver every event twice)."""
        task = self._reader
        if task is None or task.done() or not task.get_loop().is_running():
            self._reader_ready = asyncio.Event()
            self._reader = asyncio.get_running_loop().create_task(self._read_forever(self._reader_ready))
        await self._reader_ready.wait()

    async def _read_forever(self, ready: asyncio.Event) -> None:
        """One blocking XREAD per process hands the stream's new events to this process's subscribers."""
        client = _aioredis(settings.REDIS_URL)
        if self._read_from == "$":
            newest: Any
            try:
                newest = await client.xrevrange(_stream(), count=1)
            except redis.RedisError:
                newest = []
            self._read_from = newest[0][0].decode() if newest else "0-0"
        ready.set()
        while True:
            answer: Any
            try:
                answer = await client.xread({_stream(): self._read_from}, block=5000, count=500)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarting: try again shortly, from where we were
                logger.exception("live events: reading the Redis stream failed")
                await asyncio.sleep(1)
                continue
            for _stream_name, rows in answer or []:
                events = [_from_stream(raw_id, fields) for raw_id, fields in rows]
                if events:
                    self._read_from = events[-1].id
                    self._deliver(events)


def _fan_out(events: list[LiveEvent], subscribers: list[Subscription]) -> None:
    for subscriber in subscribers:
        for event in events:
            if subscriber.wants(event):
                subscriber.put(event)


def _from_stream(raw_id: Any, fields: Any) -> LiveEvent:
    """An event from a stream entry (bytes id, bytes field names and values)."""
    data = json.loads(fields[b"data"])
    return LiveEvent(raw_id.decode(), fields[b"org"].decode(), fields[b"type"].decode(), data)


def _stream() -> str:
    return settings.AIWM_EVENTS_STREAM


@functools.lru_cache(maxsize=1)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def _aioredis(url: str) -> aioredis.Redis:
    """An asyncio client of the running loop (its connections belong to that loop)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    return client


hub = Hub()
