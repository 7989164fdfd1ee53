"""Deployments that cannot lie: one that runs, or that a workflow is starting or stopping, cannot
be deleted (409: its model server would keep the node's GPU memory with no record left to stop
it); `isRunning` follows `status`."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from aiwm_project.background import run_sweep
from deployments.models import Deployment
from executions.engine import execution_apply_result
from executions.models import Execution
from nodes.models import Node
from tests.support.api import assert_error
from tests.support.factories import NodeFactory, deployment_with_model
from tests.support.personas import ORG_A, Personas

pytestmark = pytest.mark.django_db

NODE = "node-gpu-01"
URL = "/api/deployments/deploy-1"


@pytest.fixture
def deployment(personas: Personas) -> Deployment:
    NodeFactory.create(node_id=NODE)
    return deployment_with_model("deploy-1", NODE)


def _finish_step(execution_id: str) -> None:
    """The node answers the execution's running step with success."""
    execution = Execution.objects.get(execution_id=execution_id)
    sent = next(s["sentMessageId"] for s in execution.steps if s["status"] == "running")
    data: dict[str, Any] = {"originalMessageId": sent, "status": "success", "result": {"endpoint": "http://x:8080"}}
    execution_apply_result(org_id=ORG_A, node_id=NODE, message_id=str(uuid.uuid4()), data=data)


def _refused(personas: Personas, words: str) -> None:
    body = assert_error(personas.owner_a.delete(URL), 409)
    assert words in body["message"], body
    assert personas.owner_a.get(URL).status_code == 200  # nothing changed


def test_a_deployment_never_started_is_deleted(personas: Personas, deployment: Deployment) -> None:
    assert personas.owner_a.delete(URL).status_code == 200
    assert personas.owner_a.get(URL).status_code == 404


def test_delete_is_refused_while_starting_running_and_stopping(personas: Personas, deployment: Deployment) -> None:
    start = personas.owner_a.post(f"{URL}/start").json()
    _refused(personas, "being started")
    # The model is on the node (download step), then the container starts: running.
    for _ in range(2):
        _finish_step(start["executionId"])
    assert personas.owner_a.get(URL).json()["status"] == "running"
    _refused(personas, "running; stop it first")
    stop = personas.owner_a.post(f"{URL}/stop", {}, format="json").json()
    _refused(personas, "being stopped")
    _finish_step(stop["executionId"])
    assert personas.owner_a.get(URL).json()["status"] == "stopped"
    assert personas.owner_a.delete(URL).status_code == 200


def test_a_deployment_marked_running_by_its_node_is_not_deleted(personas: Personas, deployment: Deployment) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(is_running=True)
    _refused(personas, "running; stop it first")


def test_the_admin_soft_delete_action_follows_the_same_rule(
    operator: Any, personas: Personas, deployment: Deployment
) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(status="running", is_running=True)
    response = operator.post(
        "/admin/deployments/deployment/", {"action": "soft_delete_selected", "_selected_action": [deployment.pk]}
    )
    assert response.status_code == 302
    assert not Deployment.objects.get(pk=deployment.pk).is_deleted


def test_is_running_follows_status_and_never_contradicts_it(personas: Personas, deployment: Deployment) -> None:
    owner = personas.owner_a
    body = owner.put(URL, {"status": "running"}, format="json").json()
    assert (body["status"], body["isRunning"]) == ("running", True)
    body = owner.put(URL, {"status": "stopped", "isRunning": False}, format="json").json()
    assert (body["status"], body["isRunning"]) == ("stopped", False)
    refused = assert_error(owner.put(URL, {"isRunning": True}, format="json"), 400)
    assert any(line.startswith("isRunning") for line in refused["errors"]), refused
    refused = assert_error(owner.put(URL, {"status": "pending", "isRunning": True}, format="json"), 400)
    assert owner.get(URL).json()["isRunning"] is False


def test_a_node_in_maintenance_takes_no_new_deployment(personas: Personas, deployment: Deployment) -> None:
    personas.owner_a.put(f"/api/nodes/{NODE}", {"status": "maintenance"}, format="json")
    body = assert_error(personas.owner_a.post(f"{URL}/start"), 409)
    assert "maintenance" in body["message"] and NODE in body["message"], body
    assert not Execution.objects.exists()
    assert personas.owner_a.get(URL).json()["events"] == []


def test_a_running_deployment_on_a_node_gone_offline_says_so_once(personas: Personas, deployment: Deployment) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(status="running", is_running=True, health_status="healthy")
    Node.objects.filter(node_id=NODE).update(status="online")
    assert run_sweep()["deployments_flagged"] == 0  # online: nothing to say
    Node.objects.filter(node_id=NODE).update(status="offline")
    assert run_sweep()["deployments_flagged"] == 1
    assert run_sweep()["deployments_flagged"] == 0  # said once
    body = personas.owner_a.get(URL).json()
    assert (body["status"], body["isRunning"], body["healthStatus"]) == ("running", True, "unknown")
    assert [(e["event"], e["severity"]) for e in body["events"]] == [("node.offline", "warning")]


@pytest.mark.django_db(transaction=True)  # the node's answers commit in another thread while the request waits
def test_start_with_wait_answers_with_the_outcome(personas: Personas, deployment: Deployment) -> None:
    """`?wait=SECONDS`: the answer comes when the workflow ended (here: the node answered from another
    thread while the request waited), or at the deadline with the execution still running."""
    owner = personas.owner_a
    body = owner.post(f"{URL}/start?wait=1").json()
    assert body["executionStatus"] == "running" and "is running" in body["message"], body
    owner.post(f"/api/executions/{body['executionId']}/cancel", {}, format="json")

    def answer_soon() -> None:
        try:
            for _ in range(100):
                time.sleep(0.05)
                execution = Execution.objects.filter(type="deploy-model", status="running").first()
                if execution is not None:
                    for _ in range(2):
                        _finish_step(execution.execution_id)
                    return
        finally:
            connection.close()  # this thread's own connection, or the test database cannot be dropped

    with ThreadPoolExecutor(1) as pool:
        pool.submit(answer_soon)
        body = owner.post(f"{URL}/start?wait=10").json()
    assert (body["message"], body["executionStatus"]) == ("Deployment started successfully", "completed"), body
    assert (body["deployment"]["status"], body["deployment"]["isRunning"]) == ("running", True)
    for bad in ("-1", "301", "²", "soon"):
        refused = assert_error(owner.post(f"{URL}/stop?wait={bad}", {}, format="json"), 400)
        assert refused["errors"][0].startswith("wait"), refused


def test_reconcile_tells_the_node_to_stop_what_it_should_not_run_once(personas: Personas) -> None:
    """deployments_reconcile_node (every register of AIWM's agent): a deployment the node reports
    but the records do not have live on it (unknown, deleted, another node's) gets one deployment.stop,
    not one per register; malformed entries are skipped."""
    from deployments.services import deployments_reconcile_node
    from nodes.models import NodeCommand
    from tests.support.factories import AIModelFactory, DeploymentFactory, NodeFactory

    NodeFactory.create(node_id="node-a")
    NodeFactory.create(node_id="node-b")
    AIModelFactory.create(model_id="m1", name="M", node_id="node-b")
    DeploymentFactory.create(deployment_id="dep-elsewhere", model_id="m1", node_id="node-b")
    reported = [{"deploymentId": "dep-unknown", "status": "running"}, {"deploymentId": "dep-elsewhere"}, "junk", {}]
    first = deployments_reconcile_node(org_id=ORG_A, node_id="node-a", reported=reported)
    assert first == {"applied": [], "stopped": ["dep-unknown", "dep-elsewhere"], "failed": []}
    again = deployments_reconcile_node(org_id=ORG_A, node_id="node-a", reported=reported)
    assert again["stopped"] == ["dep-unknown", "dep-elsewhere"]
    stops = NodeCommand.objects.filter(node_id="node-a", type="deployment.stop")
    assert sorted(c.resource["id"] for c in stops) == ["dep-elsewhere", "dep-unknown"]  # once each
