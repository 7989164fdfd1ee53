"""The fleet dashboard (the admin's index) and the console's admin pages, through the test client:
its figures, bounded queries with 100 nodes, the GPU history, and one operator identity."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from aiwm_project.auth import decode_token
from executions.choices import ExecutionStatus
from tests.support.factories import AIModelFactory, DeploymentFactory, ExecutionFactory, NodeFactory, NodeMetricFactory
from tests.support.personas import ORG_A

pytestmark = pytest.mark.django_db


def gpu(device: str, used: int, utilization: float) -> dict[str, Any]:
    return {
        "deviceId": device,
        "model": "H100",
        "memoryTotal": 80000,
        "memoryFree": 80000 - used,
        "utilization": utilization,
    }


def fleet(nodes: int) -> None:
    for i in range(nodes):
        devices = [gpu(f"GPU-{d}", 40000 if d == 0 else 0, 90.0 if d == 0 else 0.0) for d in range(8)]
        NodeFactory.create(node_id=f"node-{i:03d}", gpu_devices=devices, status="online" if i % 2 else "offline")


def test_the_dashboard_shows_the_fleet_with_a_fixed_number_of_queries(operator: Client) -> None:
    fleet(10)
    with CaptureQueriesContext(connection) as few:
        assert operator.get("/admin/").status_code == 200
    fleet_more = 90
    for i in range(10, 10 + fleet_more):
        NodeFactory.create(node_id=f"node-{i:03d}", gpu_devices=[gpu("GPU-0", 100, 1.0)], status="online")
    with CaptureQueriesContext(connection) as many:
        page = operator.get("/admin/")
    assert page.status_code == 200
    assert len(many) == len(few), [q["sql"][:120] for q in many.captured_queries]  # no query per node
    html = page.content.decode()
    # The table: the 25 that need a look first — the 5 offline nodes (8 GPUs each) — then by id:
    # the first 10's 5 online ones (8 GPUs each), then 15 of the one-GPU nodes.
    assert html.count('data-device="GPU-') == 5 * 8 + 5 * 8 + 15 and "All nodes" in html
    summary = operator.get("/admin/console/summary.json").json()
    assert summary["nodes"] == {"online": 5 + fleet_more, "offline": 5, "maintenance": 0}
    # Online nodes only: 5 with one busy GPU of 8 (40 GB used of 80), 90 with a barely used one.
    assert summary["gpusTotal"] == 5 * 8 + fleet_more and summary["gpusBusy"] == 5
    assert summary["gpuMemoryFreeMb"] == 5 * (8 * 80000 - 40000) + fleet_more * (80000 - 100)


def test_latest_failures_link_to_their_pages(operator: Client) -> None:
    NodeFactory.create(node_id="node-gpu-01")
    failed = ExecutionFactory.create(execution_id="exec-broken")
    type(failed).objects.filter(pk=failed.pk).update(
        status=ExecutionStatus.FAILED, completed_at=timezone.now(), error={"code": "STEP_TIMEOUT", "message": "slow"}
    )
    AIModelFactory.create(model_id="m1", name="M", node_id="node-gpu-01")
    deployment = DeploymentFactory.create(deployment_id="dep-broken", model_id="m1", node_id="node-gpu-01")
    type(deployment).objects.filter(pk=deployment.pk).update(status="failed", events=[{"message": "out of memory"}])
    html = operator.get("/admin/").content.decode()
    assert f"/admin/executions/execution/{failed.pk}/change/" in html and "STEP_TIMEOUT slow" in html
    assert f"/admin/deployments/deployment/{deployment.pk}/change/" in html and "out of memory" in html


def test_gpu_history_per_device_in_the_chosen_range(operator: Client) -> None:
    node = NodeFactory.create(node_id="node-gpu-01")
    now = timezone.now()
    for minutes, util in ((90, 10), (30, 50), (5, 70)):
        point = {"deviceId": "GPU-0", "utilization": util, "memoryTotal": 1000, "memoryUsed": 250}
        NodeMetricFactory.create(timestamp=now - timedelta(minutes=minutes), data={"gpu": [point]})
    url = "/admin/console/gpu-series.json"
    hour = operator.get(f"{url}?node={node.pk}&seconds=3600").json()
    assert hour["devices"]["GPU-0"]["utilization"] == [50, 70] and hour["devices"]["GPU-0"]["memory"] == [25.0, 25.0]
    day = operator.get(f"{url}?node={node.pk}&seconds=86400").json()
    assert day["devices"]["GPU-0"]["utilization"] == [10, 50, 70]
    refused = operator.get(f"{url}?node={node.pk}&seconds=5")
    assert refused.status_code == 400 and refused.json()["statusCode"] == 400 and "seconds" in refused.json()["message"]
    assert operator.get(f"{url}?node=nope&seconds=3600").status_code == 404
    assert Client().get("/admin/console/gpu-series.json").status_code == 302  # the admin's login first


def test_one_account_logs_in_to_the_admin_and_the_api_and_takes_a_token_from_the_admin() -> None:
    out = io.StringIO()
    call_command(
        "create_iam_user", "--username", "ops", "--password", "pw-ops-1", "--org-id", ORG_A,
        "--roles", "organization.owner", "--admin", stdout=out,
    )  # fmt: skip
    assert "/auth/login and /admin" in out.getvalue()
    api = APIClient().post("/auth/login", {"username": "ops", "password": "pw-ops-1"}, format="json")
    assert api.status_code == 200
    browser = Client()
    assert browser.login(username="ops", password="pw-ops-1")
    assert browser.get("/admin/").status_code == 200
    page = browser.post("/admin/api-token/", {"lifetime": "3600"})
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    token = page.context["token"]
    claims = decode_token(token)
    assert claims["orgId"] == ORG_A and claims["exp"] - claims["iat"] == 3600
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/nodes").status_code == 200
    assert "error" in browser.post("/admin/api-token/", {"lifetime": "999999999"}).context  # only the offered ones


def test_an_admin_account_without_iam_attributes_is_told_how_to_get_them(operator: Client, settings: Any) -> None:
    page = operator.get("/admin/api-token/").content.decode()
    assert "create_iam_user --username ops" in page and "--admin" in page
    settings.IAM_JWT_SECRET = ""
    assert "external IAM" in operator.get("/admin/api-token/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_node_page_shows_its_current_session(gateway: Any) -> None:
    from asgiref.sync import async_to_sync
    from django.contrib.auth import get_user_model

    from nodes.models import Node
    from tests.support.daemons import daemon_for

    node, token = NodeFactory.with_token(node_id="node-gpu-01")

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register(daemonVersion="1.4.2")

    async_to_sync(scenario)()
    seen = Node.objects.get(pk=node.pk)
    assert seen.remote_address == "127.0.0.1" and seen.connected_at is not None
    operator = Client()
    operator.force_login(get_user_model().objects.create_superuser("ops2", "o@example.com", "pw"))
    page = operator.get(f"/admin/nodes/node/{node.pk}/change/").content.decode()
    for shown in ("127.0.0.1", "1.4.2", seen.connected_at.strftime("%Y-%m-%d %H:%M:%S")):
        assert shown in page, shown
    assert 'name="connection_id"' not in page and 'name="token_id"' not in page  # read-only, never typed


def test_the_node_and_deployment_pages_list_their_commands_and_logs(operator: Client) -> None:
    from tests.support.factories import DeploymentLogFactory, NodeCommandFactory

    node = NodeFactory.create(node_id="node-gpu-01")
    command = NodeCommandFactory.create(node_id="node-gpu-01")
    AIModelFactory.create(model_id="m1", name="M", node_id="node-gpu-01")
    deployment = DeploymentFactory.create(deployment_id="dep-1", model_id="m1", node_id="node-gpu-01")
    DeploymentLogFactory.create(deployment_id="dep-1", node_id="node-gpu-01", message="model loaded in 2.1 s")
    node_page = operator.get(f"/admin/nodes/node/{node.pk}/change/").content.decode()
    assert (
        f"/admin/nodes/nodecommand/{command.pk}/change/" in node_page and "/admin/deployments/deployment/" in node_page
    )
    deployment_page = operator.get(f"/admin/deployments/deployment/{deployment.pk}/change/").content.decode()
    assert "model loaded in 2.1 s" in deployment_page


def test_the_gpu_totals_follow_what_the_daemons_report(operator: Client) -> None:
    """The totals are sums of each node's stored GPU figures (nodes.models.gpu_summary): a
    registration and a heartbeat (through the telemetry flush) move them, as an API edit does."""
    from django.utils import timezone

    from nodes.models import Node
    from nodes.services import node_register
    from nodes.telemetry import Heartbeat, nodes_apply_heartbeats

    node = NodeFactory.create(node_id="node-gpu-01", status="online")

    def totals() -> tuple[int, int, int]:
        summary = operator.get("/admin/console/summary.json").json()
        return summary["gpusTotal"], summary["gpusBusy"], summary["gpuMemoryFreeMb"]

    assert totals() == (0, 0, 0)
    node_register(
        node_pk=node.pk,
        connection_id="c1",
        data={"gpuDevices": [gpu("GPU-0", 0, 0.0), gpu("GPU-1", 0, 0.0), {"deviceId": "GPU-2", "model": "H100"}]},
    )
    assert totals() == (3, 0, 2 * 80000)  # GPU-2 reports no memory: counted, no free memory
    status = [{"deviceId": "GPU-0", "utilization": 97.0}, {"deviceId": "GPU-1", "memoryFree": 60000}]
    nodes_apply_heartbeats(heartbeats={node.pk: Heartbeat(data={"gpuStatus": status}, at=timezone.now())})
    assert totals() == (3, 2, 80000 + 60000)  # GPU-0 computes, GPU-1 holds a quarter of its memory
    stored = Node.objects.get(pk=node.pk)
    assert (stored.gpu_count, stored.gpus_busy, stored.gpu_memory_free) == (3, 2, 140000)


def test_nodes_stored_before_the_gpu_figures_get_them_from_their_gpus() -> None:
    """The migration that added the per-node GPU figures computes them for the nodes already there."""
    import importlib

    from django.apps import apps

    from nodes.models import Node

    migration = importlib.import_module("nodes.migrations.0007_node_gpu_summary")
    NodeFactory.create(node_id="node-old", gpu_devices=[gpu("GPU-0", 40000, 0.0), gpu("GPU-1", 0, 0.0)])
    Node.objects.update(gpu_count=0, gpus_busy=0, gpu_memory_free=0)  # as the rows were before
    migration.summarise_stored_gpus(apps, None)
    stored = Node.objects.get(node_id="node-old")
    assert (stored.gpu_count, stored.gpus_busy, stored.gpu_memory_free) == (2, 1, 40000 + 80000)


def test_the_pages_javascript_colours_badges_from_the_servers_list(operator: Client) -> None:
    """Live events redraw status badges in the browser: the dashboard and the node page carry the
    server's status colours (aiwm_project.admin.STATUS_KINDS), not a second list in the script."""
    import json
    import re

    from aiwm_project.admin import STATUS_KINDS

    node = NodeFactory.create(node_id="node-gpu-01")
    for url in ("/admin/", f"/admin/nodes/node/{node.pk}/change/"):
        html = operator.get(url).content.decode()
        found = re.search(r'<script id="aiwm-status-kinds" type="application/json">(.*?)</script>', html)
        assert found and json.loads(found.group(1)) == STATUS_KINDS, url
    assert STATUS_KINDS["error"] == "bad" and STATUS_KINDS["online"] == "ok" and STATUS_KINDS["pending"] == "warn"


def test_the_dashboard_shows_the_tokens_each_model_used_in_the_last_24_hours(operator: Client) -> None:
    from inference.models import InferenceRecord

    def record(model_id: str, tokens: int, hours_ago: float = 0) -> None:
        InferenceRecord.objects.create(
            owner_org_id=ORG_A, model_id=model_id, endpoint="chat.completions", status_code=200,
            total_tokens=tokens, latency_ms=5, created_at=timezone.now() - timedelta(hours=hours_ago),
        )  # fmt: skip

    assert "No requests through /v1 in the last 24 hours." in operator.get("/admin/").content.decode()
    record("small-model", 10)
    record("big-model", 700)
    record("big-model", 300)
    record("big-model", 5000, hours_ago=25)  # outside the window
    html = operator.get("/admin/").content.decode()
    table = html[html.index('id="tokens-by-model"') :]
    table = table[: table.index("</table>")]
    assert table.index("big-model") < table.index("small-model")  # most tokens first
    assert "<td>big-model</td><td>68dd05b175d9e3c17bf97f60</td><td>2</td><td>1000</td>" in table
    assert "<td>small-model</td><td>68dd05b175d9e3c17bf97f60</td><td>1</td><td>10</td>" in table
