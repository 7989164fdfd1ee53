"""What a request through the gateway cost: its tokens, read from the answer or counted afterwards,
recorded behind the request (write-behind) and rolled into the contract's counters.

Every request becomes an InferenceRecord; every `FLUSH_SECONDS` (or `FLUSH_RECORDS` records) the
recorder writes them in one transaction, with the counters they move: a model's `totalInference`,
`totalTokens`, `totalProcessingTime`; a deployment's `totalInferences`, `averageLatency`,
`lastHealthCheck`; an API key's `lastUsedAt`. A request is never held up by the database; a
process that dies loses at most the last second of records (not the answers).

Tokens: a backend's `usage` when it gives one; a stream without one (llama.cpp's server never
sends it) is counted afterwards with the backend's tokenizer (`/extras/tokenize/count`, while the
request still holds its deployment's slot: llama.cpp's tokenizer takes the lock a generation
holds); a backend with no tokenizer is estimated at four characters a token (`tokensFrom`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Avg, Count, F, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from aiwm_project.db import db_sync_to_async
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from inference.models import InferenceRecord
from inference.services import keys_mark_used
from models_registry.models import AIModel

if TYPE_CHECKING:
    from inference.gateway import Exchange
    from inference.routing import Target

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
FLUSH_RECORDS = 500
TOKENIZER_TIMEOUT_SECONDS = 10.0


# --- tokens ---


def read_usage(exchange: Exchange, content: bytes) -> None:
    """The tokens of a whole (non-streamed) answer, from its `usage`."""
    try:
        document = json.loads(content)
    except ValueError:
        return
    found = document.get("usage") if isinstance(document, dict) else None
    if isinstance(found, dict):
        exchange.prompt_tokens = _count(found.get("prompt_tokens"))
        exchange.completion_tokens = _count(found.get("completion_tokens"))
        if not exchange.completion_tokens and exchange.endpoint != "embeddings":
            exchange.completion_tokens = max(_count(found.get("total_tokens")) - exchange.prompt_tokens, 0)
        exchange.tokens_from = "backend"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def estimated_tokens(text: str) -> int:
    """Four characters a token: the count when no tokenizer can be asked."""
    return -(-len(text) // 4)


class EventReader:
    """Server-Sent Events read from chunks as they arrive: each complete `data:` line's JSON object,
    with the name of the `event:` it came under ("" for none). `[DONE]`, comments and data that is
    not a JSON object are skipped."""

    def __init__(self) -> None:
        self._rest = b""
        self._event = ""

    def events(self, chunk: bytes) -> list[tuple[str, dict[str, Any]]]:
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop()
        out = []
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:  # the end of an event
                self._event = ""
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode(errors="replace")
            elif line.startswith(b"data:"):
                payload = line[5:].strip()
                if not payload or payload == b"[DONE]":
                    continue
                try:
                    event = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    out.append((self._event, event))
        return out


class StreamReader(EventReader):
    """Reads the Server-Sent Events passing through: the text generated and a `usage`, if one comes."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        for _, event in self.events(chunk):
            if isinstance(event.get("usage"), dict):
                self.usage = event["usage"]
            for choice in event.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(piece, str):
                    self.text.append(piece)


def prompt_text(body: dict[str, Any]) -> str:
    """The words of the prompt (message contents or the prompt itself), for a tokenizer to count."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "\n".join(p for p in prompt if isinstance(p, str))
    return prompt if isinstance(prompt, str) else ""


async def count_stream(
    session: aiohttp.ClientSession, exchange: Exchange, target: Target, body: dict[str, Any], reader: StreamReader
) -> None:
    if reader.usage is not None:
        exchange.prompt_tokens = _count(reader.usage.get("prompt_tokens"))
        exchange.completion_tokens = _count(reader.usage.get("completion_tokens"))
        exchange.tokens_from = "backend"
        return
    prompt, completion = prompt_text(body), "".join(reader.text)
    if target.backend == "llama.cpp":
        try:
            exchange.prompt_tokens = await _tokenizer_count(session, target, prompt)
            exchange.completion_tokens = await _tokenizer_count(session, target, completion)
            exchange.tokens_from = "tokenizer"
            return
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            log.info("could not count the tokens of a stream with %s's tokenizer: %s", target.deployment_id, exc)
    exchange.prompt_tokens, exchange.completion_tokens = estimated_tokens(prompt), estimated_tokens(completion)
    exchange.tokens_from = "estimate"


async def _tokenizer_count(session: aiohttp.ClientSession, target: Target, text: str) -> int:
    if not text:
        return 0
    url = target.base_url.removesuffix("/v1") + "/extras/tokenize/count"
    timeout = aiohttp.ClientTimeout(total=TOKENIZER_TIMEOUT_SECONDS)
    async with session.post(url, json={"input": text}, timeout=timeout) as response:
        response.raise_for_status()
        return _count((await response.json())["count"])


# --- recording ---


class Recorder:
    """Records collected on the event loop, written by a worker thread in batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The fields of each record: the model instances are built by the writing thread, not on the event loop.
        self._records: list[dict[str, Any]] = []
        self._keys_used: dict[str, datetime] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._wake = threading.Event()

    def key_used(self, digest: str) -> None:
        with self._lock:
            self._keys_used[digest] = timezone.now()

    def record(self, exchange: Exchange) -> None:
        now = time.monotonic()
        target = exchange.target
        prompt, completion = exchange.prompt_tokens, exchange.completion_tokens
        record = dict(
            created_at=timezone.now(),
            owner_org_id=exchange.caller.org_id,
            api_key_id=exchange.caller.api_key.api_key_id if exchange.caller.api_key else "",
            user_id=exchange.caller.user_id,
            model_id=exchange.model_id,
            deployment_id=target.deployment_id if target else "",
            node_id=target.node_id if target else "",
            endpoint=exchange.endpoint,
            stream=exchange.stream,
            status_code=exchange.status or 500,
            error=exchange.error[:500],
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            tokens_from=exchange.tokens_from,
            latency_ms=(now - exchange.started) * 1000,
            ttft_ms=None if exchange.first_byte is None else (exchange.first_byte - exchange.started) * 1000,
        )
        with self._lock:
            self._records.append(record)
            full = len(self._records) >= FLUSH_RECORDS
        if full:
            self._wake.set()
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a test calling record directly): written by flush()
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.to_thread(self._wake.wait, FLUSH_SECONDS)
            self._wake.clear()
            try:
                await db_sync_to_async(self.flush)()
            except Exception:
                log.exception("writing the gateway's usage records failed; they are kept for the next try")

    def flush(self) -> int:
        """Writes what was recorded (in one transaction); returns how many records."""
        with self._lock:
            fields, self._records = self._records, []
            keys, self._keys_used = self._keys_used, {}
        if not fields and not keys:
            return 0
        try:
            with transaction.atomic():
                insert_records(fields)
                roll_up(fields)
            keys_mark_used(keys)
        except Exception:
            with self._lock:
                self._records[:0] = fields
            raise
        return len(fields)


def insert_records(records: list[dict[str, Any]]) -> None:
    """One INSERT of many rows (executemany), without a model instance per row: at thousands of
    requests a second, building instances for bulk_create was a tenth of the web process's CPU
    (BENCHMARKS.md "The inference gateway"), on a thread that shares the GIL with the event loop."""
    if not records:
        return
    fields = [f for f in InferenceRecord._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(InferenceRecord._meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"
        f" VALUES ({', '.join(['%s'] * len(fields))})"
    )
    rows = [
        [f.get_db_prep_save(r[f.attname] if f.attname in r else f.get_default(), connection) for f in fields]
        for r in records
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def roll_up(records: list[dict[str, Any]]) -> None:
    """The contract's counters moved by these records, one UPDATE per model and per deployment."""
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_deployment: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["status_code"] < 400:
            by_model[(r["owner_org_id"], r["model_id"])].append(r)
            if r["deployment_id"]:
                by_deployment[(r["owner_org_id"], r["deployment_id"])].append(r)
    for (org_id, model_id), rows in by_model.items():
        AIModel.objects.for_org(org_id).filter(model_id=model_id).update(
            total_inference=F("total_inference") + len(rows),
            total_tokens=F("total_tokens") + sum(r["total_tokens"] for r in rows),
            total_processing_time=F("total_processing_time") + round(sum(r["latency_ms"] for r in rows)),
        )
    now = timezone.now()
    for (org_id, deployment_id), rows in by_deployment.items():
        n, latency = len(rows), sum(r["latency_ms"] for r in rows)
        # SQL reads every right-hand side before the row changes: the average over old and new requests.
        Deployment.objects.for_org(org_id).filter(deployment_id=deployment_id).update(
            average_latency=(F("average_latency") * F("total_inferences") + latency) / (F("total_inferences") + n),
            total_inferences=F("total_inferences") + n,
            last_health_check=now,
        )


RECORDER = Recorder()


def usage_prune(*, now: datetime | None = None) -> int:
    """Drop usage records older than AIWM_USAGE_RETENTION_DAYS (the sweep); the counters stay."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.AIWM_USAGE_RETENTION_DAYS)
    deleted, _ = InferenceRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


# --- reading ---


def served_models(org_id: str) -> list[tuple[str, datetime]]:
    """The organization's models that have a running deployment: (modelId, createdAt)."""
    running = Deployment.objects.for_org(org_id).filter(status=DeploymentStatus.RUNNING).values_list("model_id")
    rows = AIModel.objects.for_org(org_id).filter(model_id__in=running).order_by("model_id")
    return list(rows.values_list("model_id", "created_at"))


GROUPS = {"model": "model_id", "deployment": "deployment_id", "apiKey": "api_key_id", "day": "day"}


def usage_summary(*, org_id: str, start: datetime, end: datetime, group_by: str) -> list[dict[str, Any]]:
    """GET /api/usage: requests and tokens per group in [start, end)."""
    rows = InferenceRecord.objects.for_org(org_id).filter(created_at__gte=start, created_at__lt=end)
    column = GROUPS[group_by]
    if column == "day":
        rows = rows.annotate(day=TruncDay("created_at"))
    summary = (
        rows.values(column)
        .annotate(
            requests=Count("id"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            total=Sum("total_tokens"),
            latency=Avg("latency_ms"),
        )
        .order_by(column)
    )
    out = []
    for row in summary:
        key = row[column]
        out.append(
            {
                "key": key.date().isoformat() if isinstance(key, datetime) else key,
                "requests": row["requests"],
                "promptTokens": row["prompt"] or 0,
                "completionTokens": row["completion"] or 0,
                "totalTokens": row["total"] or 0,
                "averageLatency": round(row["latency"] or 0.0, 3),
            }
        )
    return out
