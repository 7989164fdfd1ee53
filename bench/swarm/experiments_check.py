"""`node_swarm.py --smoke`'s check of bench/swarm_experiments.py: each variant loaded by name, as the
ASGI server would load it (`--service-app`/`--echo-app`), patched, and its patch exercised against
the benchmark's database (its own process: `python -m bench.swarm.experiments_check`, Django set up
from DATABASE_URL). A variant whose target the service renamed fails here, as does one whose patch
no longer takes effect (the write it should make, or should not make, is read back).

Prints one `check ...` line per variant; exit status 1 when one failed.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import uuid
from collections.abc import Callable

from bench.harness.messages import heartbeat_message, iso_now, metrics_message
from bench.harness.smoke import Check, judge, resolve

VARIANTS = ("service_cpython_gc", "echo_cpython_gc", "service_async_flush", "service_no_flush")


def prepare(name: str) -> None:
    app = resolve(f"bench.swarm_experiments.{name}")
    app.prepare()


def buffered(uptime: int) -> tuple[str, str]:
    """A heartbeat (uptimeSeconds = `uptime`) and a metric point of a warm-up node, in the gateway's
    buffer; returns the node's pk and the point's messageId."""
    from gateway import telemetry
    from nodes.models import Node

    node = Node.objects.filter(node_id__startswith="warmup-").order_by("node_id").first()
    if node is None:
        raise RuntimeError("no warm-up node seeded")
    rng = random.Random(uptime)
    telemetry.buffer.add_heartbeat(node.pk, heartbeat_message(uptime, rng)["data"])
    message_id = str(uuid.uuid4())
    telemetry.buffer.add_metric(
        org_id=node.owner_org_id,
        node_id=node.node_id,
        message_id=message_id,
        data=metrics_message(rng)["data"],
        timestamp=iso_now(),
    )
    return node.pk, message_id


def written(pk: str, message_id: str, uptime: int) -> tuple[bool, bool]:
    """(the node's row has `uptime`, the metric point is stored)."""
    from nodes.models import Node, NodeMetric

    row = Node.objects.filter(pk=pk).values_list("uptime_seconds", flat=True).first()
    return row == uptime, NodeMetric.objects.filter(message_id=message_id).exists()


def check_gc(name: str) -> Check:
    prepare(name)  # loading the application tunes the collector (as the server does), the patch undoes it
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    return (
        f"{name}: garbage collector thresholds {threshold}, frozen objects {frozen}",
        threshold == (700, 10, 10) and frozen == 0,
    )


def check_async_flush() -> Check:
    from gateway import telemetry

    original = telemetry.flush_now
    prepare("service_async_flush")
    flush = telemetry.flush_now
    pk, message_id = buffered(uptime := 424_242)

    async def run() -> None:
        await flush()
        conn = getattr(getattr(flush, "__self__", None), "conn", None)
        if conn is not None:
            await conn.close()

    try:
        asyncio.run(run())
    finally:
        telemetry.flush_now = original
    beat, point = written(pk, message_id, uptime)
    return (
        f"service_async_flush: flush_now replaced {flush is not original}, heartbeat written {beat}, "
        f"metric point stored {point}",
        flush is not original and beat and point,
    )


def check_no_flush() -> Check:
    from gateway import telemetry

    original: Callable[..., tuple[int, int]] = telemetry.TelemetryBuffer.flush
    prepare("service_no_flush")
    pk, message_id = buffered(uptime := 535_353)
    try:
        flushed = telemetry.buffer.flush()
        left = telemetry.buffer.pending()
    finally:
        telemetry.TelemetryBuffer.flush = original  # type: ignore[method-assign]
    beat, point = written(pk, message_id, uptime)
    return (
        f"service_no_flush: flush returned {flushed}, {left} readings left in the buffer, heartbeat written {beat}, "
        f"metric point stored {point}",
        flushed == (0, 0) and left == 0 and not beat and not point,
    )


def main() -> int:
    import django

    django.setup()
    checks = [check_gc("service_cpython_gc"), check_gc("echo_cpython_gc"), check_async_flush(), check_no_flush()]
    assert len(checks) == len(VARIANTS)
    return 0 if judge(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
