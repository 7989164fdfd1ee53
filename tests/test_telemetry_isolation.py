"""One node's bad telemetry never costs another node its readings: the metric batch holds every
node's points, and a point the database refuses drops only its own node's points of that batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.utils import timezone as dj_timezone

from nodes.models import NodeMetric
from nodes.telemetry import MetricPoint, node_metrics_record
from tests.support.personas import ORG_A, ORG_B

pytestmark = pytest.mark.django_db

# A point no backend stores (the protocol refuses both long before; this is the last line of
# defence): year 1 an hour east of UTC is year 0 in UTC, which Python's datetime cannot hold
# (SQLite's path converts it), and a NUL character, which PostgreSQL's jsonb refuses.
UNSTORABLE = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
UNSTORABLE_DATA: dict[str, Any] = {"cpu": {"model": "x\x00y"}}


def _point(org_id: str, node_id: str, message_id: str, at: datetime) -> MetricPoint:
    data = UNSTORABLE_DATA if at is UNSTORABLE else {"cpu": {"usage": 1}}
    return MetricPoint(org_id, node_id, message_id, at, dj_timezone.now(), data)


def test_a_point_the_database_refuses_drops_only_its_own_nodes_points() -> None:
    now = datetime.now(tz=UTC)
    node_metrics_record(
        points=[
            _point(ORG_A, "good-1", "m1", now),
            _point(ORG_B, "bad", "m2", UNSTORABLE),
            _point(ORG_B, "bad", "m3", now),  # same node, same batch: dropped with it
            _point(ORG_B, "good-2", "m4", now),
        ]
    )
    stored = sorted(NodeMetric.objects.values_list("node_id", "message_id"))
    assert stored == [("good-1", "m1"), ("good-2", "m4")]


def test_a_healthy_batch_is_one_write_and_repeats_are_skipped() -> None:
    now = datetime.now(tz=UTC)
    batch = [_point(ORG_A, "n1", "m1", now), _point(ORG_A, "n2", "m2", now)]
    node_metrics_record(points=batch)
    node_metrics_record(points=batch)
    assert NodeMetric.objects.count() == 2
