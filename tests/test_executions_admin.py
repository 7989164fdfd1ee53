"""The executions admin: list columns and step summary, edits and soft delete through the services."""

from __future__ import annotations

import pytest
from django.test import Client

from executions.models import Execution
from tests.support.executions import URL, set_status
from tests.support.factories import ExecutionFactory, NodeFactory
from tests.support.personas import Personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def execution(personas: Personas) -> Execution:
    actor = personas.owner_a.principal
    NodeFactory.create(node_id="node-gpu-01", actor=actor)
    steps = [{"index": 0, "name": "Download <model>"}, {"index": 1, "name": "Start", "dependsOn": [0]}]
    return ExecutionFactory.create(
        execution_id="exec-1", name="Deploy", category="deployment", type="deploy-model", steps=steps, actor=actor
    )


def test_changelist_shows_a_step_summary_and_filters(operator: Client, execution: Execution) -> None:
    page = operator.get("/admin/executions/execution/", {"status__exact": "pending", "q": "exec-1"})
    assert page.status_code == 200
    assert "2 steps: 2 pending" in page.content.decode()
    assert operator.get("/admin/executions/execution/", {"category__exact": "model"}).status_code == 200


def test_change_page_escapes_step_names(operator: Client, execution: Execution) -> None:
    page = operator.get(f"/admin/executions/execution/{execution.pk}/change/")
    assert page.status_code == 200
    assert "Download &lt;model&gt;" in page.content.decode()


def _edit(operator: Client, execution: Execution, **changes: object) -> None:
    url = f"/admin/executions/execution/{execution.pk}/change/"
    form = operator.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data.update(changes)
    response = operator.post(url, {k: v for k, v in data.items() if v is not None})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response


def test_edit_goes_through_the_execution_service(operator: Client, personas: Personas, execution: Execution) -> None:
    _edit(operator, execution, name="Deploy (ops)", timeout_seconds=120)
    updated = personas.owner_a.get(f"{URL}/exec-1").json()
    assert updated["name"] == "Deploy (ops)" and updated["timeoutSeconds"] == 120
    assert updated["updatedBy"] == "admin:ops"


def test_timeout_is_read_only_once_running(operator: Client, execution: Execution) -> None:
    set_status("exec-1", "running")
    form = operator.get(f"/admin/executions/execution/{execution.pk}/change/").context["adminform"].form
    assert "timeout_seconds" not in form.fields and "name" in form.fields


def test_soft_delete_action_refuses_running_executions(operator: Client, execution: Execution) -> None:
    set_status("exec-1", "running")
    action = {"action": "soft_delete_selected", "_selected_action": [execution.pk]}
    response = operator.post("/admin/executions/execution/", action, follow=True)
    assert "cancel it before deleting it" in response.content.decode()
    assert not Execution.objects.get(pk=execution.pk).is_deleted
    set_status("exec-1", "failed")
    operator.post("/admin/executions/execution/", action)
    assert Execution.objects.get(pk=execution.pk).is_deleted


def _act(operator: Client, action: str, execution: Execution) -> str:
    response = operator.post(
        "/admin/executions/execution/",
        {"action": action, "_selected_action": [execution.pk]},
        follow=True,
    )
    assert response.status_code == 200
    return " ".join(str(m) for m in response.context["messages"])


def test_operators_start_cancel_and_retry_through_the_engine(operator: Client, personas: Personas) -> None:
    NodeFactory.create(node_id="node-gpu-01", actor=personas.owner_a.principal)
    command = {"type": "model.download", "resource": {"type": "model", "id": "llama"}}
    step = {"index": 0, "name": "Download", "command": command}
    execution = ExecutionFactory.create(name="Download", steps=[step], actor=personas.owner_a.principal)
    assert "Started 1" in _act(operator, "start_selected", execution)
    current = Execution.objects.get(pk=execution.pk)
    assert current.status == "running" and current.steps[0]["status"] == "running"
    assert "Cancelled 1" in _act(operator, "cancel_selected", execution)
    current = Execution.objects.get(pk=execution.pk)
    assert current.status == "cancelled" and current.error == {
        "code": "USER_CANCELLED",
        "message": "Cancelled by an operator",
    }
    assert current.updated_by == "admin:ops"
    assert "Retried 1" in _act(operator, "retry_failed_steps", execution)
    current = Execution.objects.get(pk=execution.pk)
    assert current.retry_count == 1 and current.steps[0]["status"] == "running"


def test_a_refused_engine_action_is_reported_not_a_500(operator: Client, execution: Execution) -> None:
    messages = _act(operator, "retry_all_steps", execution)  # a pending execution cannot be retried
    assert "only a failed, timed-out or cancelled execution can be retried" in messages
    assert "Retried 0" in messages
    assert Execution.objects.get(pk=execution.pk).status == "pending"
