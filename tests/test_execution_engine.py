"""The execution engine's state machines, edge by edge, on the service functions.

Node answers go through the services the gateway calls (`nodes.commands` for `command.ack`, the
engine's `execution_apply_result` for `command.result`), so these tests exercise the outbox CAS
and the engine together; the socket path is covered end to end in test_execution_gateway.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from aiwm_project.exceptions import ConflictError, NotFoundError
from aiwm_project.services import entity_delete
from executions.engine import (
    execution_apply_result,
    execution_cancel,
    execution_retry,
    execution_start,
    executions_sweep,
)
from executions.models import Execution
from nodes.choices import CommandStatus
from nodes.commands import command_acknowledged
from nodes.models import Node, NodeCommand
from tests.support.executions import NODE, cancels_for, chain, fresh, mark_sent, step
from tests.support.factories import ExecutionFactory, NodeFactory
from tests.support.personas import ORG_A, OWNER_A

pytestmark = pytest.mark.django_db


def error_of(execution: Execution) -> dict[str, Any]:
    assert isinstance(execution.error, dict), execution.error
    return execution.error


def statuses(execution: Execution) -> list[str]:
    return [s["status"] for s in fresh(execution).steps]


def command_of(execution: Execution, index: int) -> NodeCommand:
    return NodeCommand.objects.get(message_id=fresh(execution).steps[index]["sentMessageId"])


def answer(
    execution: Execution, index: int, status: str = "success", *, node_id: str = NODE, **data: Any
) -> NodeCommand:
    """The node answers the step's current command (a new messageId each time, as a daemon does)."""
    original = fresh(execution).steps[index]["sentMessageId"]
    return answer_command(original, status, node_id=node_id, **data)


def answer_command(
    original: str, status: str = "success", *, node_id: str = NODE, message_id: str | None = None, **data: Any
) -> NodeCommand:
    body = {"originalMessageId": original, "status": status, **data}
    return execution_apply_result(
        org_id=ORG_A,
        node_id=node_id,
        message_id=message_id or str(uuid.uuid4()),
        data=body,
    )


@pytest.fixture(autouse=True)
def node(db: None) -> Node:
    return NodeFactory.create(node_id=NODE)


# --- execution: pending -> running -------------------------------------------------------------


def test_start_dispatches_every_ready_step_with_the_contracts_metadata() -> None:
    execution = ExecutionFactory.create(
        steps=[step(0), step(1), step(2, [0, 1], timeoutSeconds=60)], timeout_seconds=900
    )
    started = execution_start(pk=execution.pk, actor=OWNER_A)
    assert started.status == "running"
    assert started.started_at is not None
    assert started.timeout_at == started.started_at + timedelta(seconds=900)
    assert [s["status"] for s in started.steps] == ["running", "running", "pending"]
    for index in (0, 1):
        command = command_of(execution, index)
        assert command.status == CommandStatus.QUEUED  # the node is not connected: it waits in the outbox
        assert command.node_id == NODE and command.type == "model.download"
        assert command.resource == {"type": "model", "id": f"model-{index}"}
        assert command.metadata == {
            "executionId": execution.execution_id,
            "stepIndex": index,
            "timeout": 900,
            "priority": "normal",
        }
        assert started.steps[index]["startedAt"] is not None
    assert started.sent_message_ids == [started.steps[0]["sentMessageId"], started.steps[1]["sentMessageId"]]
    assert started.next_check_at == started.timeout_at


def test_start_of_a_running_execution_is_409_without_force() -> None:
    execution = chain()
    execution_start(pk=execution.pk, actor=OWNER_A)
    first = fresh(execution).steps[0]["sentMessageId"]
    with pytest.raises(ConflictError, match="already running"):
        execution_start(pk=execution.pk, actor=OWNER_A)
    assert fresh(execution).steps[0]["sentMessageId"] == first
    assert NodeCommand.objects.count() == 1


def test_force_restarts_a_running_execution_and_withdraws_its_commands() -> None:
    execution = ExecutionFactory.create(steps=[step(0), step(1)])
    execution_start(pk=execution.pk, actor=OWNER_A)
    mark_sent(execution, 0)  # reached the node: it must be told to cancel
    old = [s["sentMessageId"] for s in fresh(execution).steps]
    restarted = execution_start(pk=execution.pk, force=True, actor=OWNER_A)
    assert restarted.status == "running"
    assert [s["status"] for s in restarted.steps] == ["running", "running"]
    assert [s["sentMessageId"] for s in restarted.steps] != old
    assert NodeCommand.objects.get(message_id=old[0]).status == CommandStatus.CANCELLED
    assert NodeCommand.objects.get(message_id=old[1]).status == CommandStatus.CANCELLED
    assert len(cancels_for(old[0])) == 1  # it had been sent
    assert cancels_for(old[1]) == []  # still queued: withdrawn without bothering the node
    # The old attempt's answer changes nothing.
    answer_command(old[0])
    assert fresh(execution).steps[0]["status"] == "running"


@pytest.mark.parametrize("status", ["completed", "failed", "timeout", "cancelled"])
def test_start_of_a_finished_execution_is_409(status: str) -> None:
    execution = chain()
    Execution.objects.filter(pk=execution.pk).update(status=status)
    with pytest.raises(ConflictError, match="use retry"):
        execution_start(pk=execution.pk, force=True, actor=OWNER_A)
    assert fresh(execution).status == status
    assert NodeCommand.objects.count() == 0


def test_an_execution_without_steps_completes_at_start() -> None:
    execution = ExecutionFactory.create(steps=[])
    started = execution_start(pk=execution.pk, actor=OWNER_A)
    assert (started.status, started.progress) == ("completed", 100)
    assert started.completed_at is not None and started.next_check_at is None


def test_steps_without_a_command_complete_at_once_and_release_their_dependents() -> None:
    marker = {"index": 0, "name": "Approve", "dependsOn": []}
    execution = ExecutionFactory.create(steps=[marker, step(1, [0])])
    started = execution_start(pk=execution.pk, actor=OWNER_A)
    assert [s["status"] for s in started.steps] == ["completed", "running"]
    assert started.progress == 50


def test_a_step_whose_node_was_deleted_fails_with_node_not_found() -> None:
    NodeFactory.create(node_id="node-gpu-02")
    execution = ExecutionFactory.create(steps=[step(0, nodeId="node-gpu-02")])
    entity_delete(instance=Node.objects.get(node_id="node-gpu-02"), actor=OWNER_A)
    started = execution_start(pk=execution.pk, actor=OWNER_A)
    assert started.status == "failed"
    assert error_of(started)["code"] == "NODE_NOT_FOUND"
    assert error_of(started)["stepIndex"] == 0 and error_of(started)["nodeId"] == "node-gpu-02"


# --- steps: running -> completed, DAG order ------------------------------------------------


def test_a_chain_runs_step_by_step_to_completed() -> None:
    execution = chain(3)
    execution_start(pk=execution.pk, actor=OWNER_A)
    assert statuses(execution) == ["running", "pending", "pending"]
    answer(execution, 0, result={"downloadPath": "/models/a"})
    assert statuses(execution) == ["completed", "running", "pending"]
    assert fresh(execution).progress == 33
    answer(execution, 1)
    answer(execution, 2, result={"ok": True})
    done = fresh(execution)
    assert done.status == "completed" and done.progress == 100 and done.completed_at is not None
    assert done.steps[0]["result"] == {"downloadPath": "/models/a"}
    assert done.result == {"steps": {"0": {"downloadPath": "/models/a"}, "2": {"ok": True}}}
    assert len(done.received_message_ids) == 3
    assert [s["receivedMessageId"] for s in done.steps] == done.received_message_ids
    assert done.next_check_at is None


def test_a_fan_out_dispatches_siblings_together_and_joins() -> None:
    execution = ExecutionFactory.create(steps=[step(0), step(1, [0]), step(2, [0]), step(3, [1, 2])])
    execution_start(pk=execution.pk, actor=OWNER_A)
    answer(execution, 0)
    assert statuses(execution) == ["completed", "running", "running", "pending"]
    answer(execution, 2)
    assert statuses(execution) == ["completed", "running", "completed", "pending"]
    answer(execution, 1)
    assert statuses(execution) == ["completed", "completed", "completed", "running"]


def test_ack_is_recorded_and_a_progress_report_moves_step_and_execution_progress() -> None:
    execution = chain(2)
    execution_start(pk=execution.pk, actor=OWNER_A)
    original = fresh(execution).steps[0]["sentMessageId"]
    ack_id = str(uuid.uuid4())
    command_acknowledged(org_id=ORG_A, node_id=NODE, original_message_id=original, message_id=ack_id)
    assert command_of(execution, 0).status == CommandStatus.ACKNOWLEDGED
    assert fresh(execution).received_message_ids == []  # an ack moves only its command
    answer(execution, 0, "progress", progress=40)
    current = fresh(execution)
    assert current.steps[0]["status"] == "running" and current.steps[0]["progress"] == 40
    assert current.progress == 20


def test_a_result_without_an_ack_still_counts() -> None:  # the ack was lost on the way
    execution = chain(1)
    execution_start(pk=execution.pk, actor=OWNER_A)
    mark_sent(execution, 0)
    answer(execution, 0)
    assert fresh(execution).status == "completed"


# --- steps: running -> failed | skipped; execution -> failed ----------------------------------


def test_a_required_step_failing_fails_the_execution_with_the_nodes_error() -> None:
    execution = ExecutionFactory.create(steps=[step(0), step(1), step(2, [0, 1])])
    execution_start(pk=execution.pk, actor=OWNER_A)
    mark_sent(execution, 1)
    error = {"code": "DOWNLOAD_FAILED", "message": "Network timeout during download", "details": {"lastError": "X"}}
    answer(execution, 0, "error", progress=45, error=error)
    failed = fresh(execution)
    assert failed.status == "failed" and failed.completed_at is not None
    assert failed.error == {**error, "nodeId": NODE, "stepIndex": 0}
    assert failed.steps[0]["status"] == "failed" and failed.steps[0]["error"] == error
    assert failed.steps[0]["progress"] == 45
    # The running sibling is withdrawn (its node is told), and nothing new is dispatched.
    assert failed.steps[1]["status"] == "failed" and failed.steps[1]["error"]["code"] == "CANCELLED"
    assert len(cancels_for(failed.steps[1]["sentMessageId"])) == 1
    assert failed.steps[2]["status"] == "pending"
    assert NodeCommand.objects.filter(type="model.download").count() == 2


def test_an_optional_step_failing_is_skipped_and_the_run_goes_on() -> None:
    execution = ExecutionFactory.create(steps=[step(0, optional=True), step(1, [0])])
    execution_start(pk=execution.pk, actor=OWNER_A)
    answer(execution, 0, "error", error={"code": "DOWNLOAD_FAILED", "message": "no space"})
    current = fresh(execution)
    assert [s["status"] for s in current.steps] == ["skipped", "running"]
    assert current.steps[0]["error"]["code"] == "DOWNLOAD_FAILED"  # kept
    answer(execution, 1)
    assert fresh(execution).status == "completed" and fresh(execution).progress == 100


def test_a_malformed_node_error_is_kept_in_the_contracts_shape() -> None:
    execution = chain(1)
    execution_start(pk=execution.pk, actor=OWNER_A)
    answer(execution, 0, "error", error="disk on fire")
    assert fresh(execution).error == {"code": "UNKNOWN", "message": "disk on fire", "nodeId": NODE, "stepIndex": 0}


# --- timeouts (the sweep) ---------------------------------------------------------------------


def later(seconds: float) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


def test_a_step_past_its_timeout_fails_with_step_timeout_and_the_execution_times_out() -> None:
    execution = ExecutionFactory.create(steps=[step(0, timeoutSeconds=30), step(1)])
    execution_start(pk=execution.pk, actor=OWNER_A)
    mark_sent(execution, 0)
    assert executions_sweep(now=later(10)) == 0  # nothing due yet
    assert executions_sweep(now=later(31)) == 1
    current = fresh(execution)
    assert current.status == "timeout"
    assert error_of(current)["code"] == "STEP_TIMEOUT" and error_of(current)["stepIndex"] == 0
    assert current.steps[0]["status"] == "failed"
    assert command_of(execution, 0).status == CommandStatus.EXPIRED
    assert len(cancels_for(current.steps[0]["sentMessageId"])) == 1
    assert current.steps[1]["error"]["code"] == "CANCELLED"  # the sibling was withdrawn


def test_a_late_result_after_a_step_timeout_changes_nothing() -> None:
    execution = chain(2, max_retries=3)
    execution_start(pk=execution.pk, actor=OWNER_A)
    Execution.objects.filter(pk=execution.pk).update(steps=_with_timeout(fresh(execution).steps, 0, 5))
    executions_sweep(now=later(3600 * 2))
    before = fresh(execution)
    answer(execution, 0)
    after = fresh(execution)
    assert after.status == before.status
    assert after.steps == before.steps and after.received_message_ids == before.received_message_ids


def _with_timeout(steps: list[dict[str, Any]], index: int, seconds: int) -> list[dict[str, Any]]:
    steps[index]["timeoutSeconds"] = seconds
    return steps


def test_an_optional_step_that_times_out_is_skipped_and_its_dependents_run() -> None:
    execution = ExecutionFactory.create(steps=[step(0, timeoutSeconds=30, optional=True), step(1, [0])])
    execution_start(pk=execution.pk, actor=OWNER_A)
    executions_sweep(now=later(31))
    current = fresh(execution)
    assert current.status == "running"
    assert [s["status"] for s in current.steps] == ["skipped", "running"]
    assert current.steps[0]["error"]["code"] == "STEP_TIMEOUT"
    assert command_of(execution, 0).status == CommandStatus.EXPIRED
    assert cancels_for(current.steps[0]["sentMessageId"]) == []  # never reached the node


def test_an_execution_past_its_timeout_times_out_during_a_running_step() -> None:
    execution = chain(2, timeout_seconds=60)
    execution_start(pk=execution.pk, actor=OWNER_A)
    mark_sent(execution, 0)
    executions_sweep(now=later(61))
    current = fresh(execution)
    assert current.status == "timeout" and error_of(current)["code"] == "EXECUTION_TIMEOUT"
    assert current.steps[0]["status"] == "failed" and current.steps[0]["error"]["code"] == "CANCELLED"
    assert len(cancels_for(current.steps[0]["sentMessageId"])) == 1
    assert current.steps[1]["status"] == "pending"
    # The sweep does not look at it again.
    assert executions_sweep(now=later(7200)) == 0


def test_a_step_to_an_offline_node_waits_in_the_outbox_then_times_out() -> None:
    execution = ExecutionFactory.create(steps=[step(0, timeoutSeconds=120)])
    execution_start(pk=execution.pk, actor=OWNER_A)
    assert command_of(execution, 0).status == CommandStatus.QUEUED
    executions_sweep(now=later(121))
    assert fresh(execution).status == "timeout"
    # Expired: it is no longer offered to the node when it registers.
    from nodes.commands import commands_pending_for

    assert commands_pending_for(org_id=ORG_A, node_id=NODE) == []


# --- cancel -------------------------------------------------------------------------------


def test_cancel_a_pending_execution() -> None:
    execution = chain()
    cancelled = execution_cancel(pk=execution.pk, reason="User requested cancellation", actor=OWNER_A)
    assert cancelled.status == "cancelled"
    assert cancelled.error == {"code": "USER_CANCELLED", "message": "User requested cancellation"}
    assert NodeCommand.objects.count() == 0


def test_cancel_a_running_execution_withdraws_its_running_steps() -> None:
    execution = ExecutionFactory.create(steps=[step(0), step(1), step(2, [0])])
    execution_start(pk=execution.pk, actor=OWNER_A)
    mark_sent(execution, 0)
    cancelled = execution_cancel(pk=execution.pk, reason="", actor=OWNER_A)
    assert cancelled.status == "cancelled" and error_of(cancelled)["code"] == "USER_CANCELLED"
    assert error_of(cancelled)["message"] == "Cancelled by user"
    assert cancelled.next_check_at is None  # the sweep has nothing left to look at
    assert [s["status"] for s in cancelled.steps] == ["failed", "failed", "pending"]
    cancel = cancels_for(cancelled.steps[0]["sentMessageId"])
    assert len(cancel) == 1
    assert cancel[0].metadata["executionId"] == execution.execution_id and cancel[0].metadata["stepIndex"] == 0
    assert cancel[0].data["originalMessageId"] == cancelled.steps[0]["sentMessageId"]
    # A result after cancel changes nothing.
    answer_command(cancelled.steps[0]["sentMessageId"])
    assert fresh(execution).steps == cancelled.steps


@pytest.mark.parametrize("status", ["completed", "failed", "timeout", "cancelled"])
def test_cancel_of_a_finished_execution_is_409(status: str) -> None:
    execution = chain()
    Execution.objects.filter(pk=execution.pk).update(status=status)
    with pytest.raises(ConflictError):
        execution_cancel(pk=execution.pk, actor=OWNER_A)
    assert fresh(execution).status == status


# --- retry --------------------------------------------------------------------------------


def fail_step(execution: Execution, index: int) -> None:
    answer(execution, index, "error", error={"code": "DOWNLOAD_FAILED", "message": "boom"})


def test_retry_with_reset_steps_runs_every_step_again_with_new_commands() -> None:
    execution = chain(3)
    execution_start(pk=execution.pk, actor=OWNER_A)
    answer(execution, 0)
    first = fresh(execution).steps[1]["sentMessageId"]
    fail_step(execution, 1)
    retried = execution_retry(pk=execution.pk, reset_steps=True, actor=OWNER_A)
    assert retried.status == "running" and retried.error is None and retried.completed_at is None
    assert retried.retry_count == 1 and len(retried.retry_attempts) == 1
    assert [s["status"] for s in retried.steps] == ["running", "pending", "pending"]
    # The earlier attempt's result for step 1 changes nothing.
    answer_command(first)
    assert statuses(execution) == ["running", "pending", "pending"]


def test_retry_without_reset_keeps_completed_steps_and_reruns_the_failed_and_what_follows() -> None:
    execution = ExecutionFactory.create(steps=[step(0), step(1), step(2, [1]), step(3, [0])])
    execution_start(pk=execution.pk, actor=OWNER_A)
    answer(execution, 0)  # completes; dispatches 3
    answer(execution, 3)
    kept = fresh(execution).steps[0]
    fail_step(execution, 1)
    retried = execution_retry(pk=execution.pk, reset_steps=False, actor=OWNER_A)
    assert [s["status"] for s in retried.steps] == ["completed", "running", "pending", "completed"]
    assert retried.steps[0] == kept
    answer(execution, 1)
    answer(execution, 2)
    assert fresh(execution).status == "completed"


def test_retry_after_timeout_and_after_cancel() -> None:
    timed_out = ExecutionFactory.create(steps=[step(0, timeoutSeconds=5)])
    execution_start(pk=timed_out.pk, actor=OWNER_A)
    executions_sweep(now=later(6))
    assert execution_retry(pk=timed_out.pk, actor=OWNER_A).status == "running"
    cancelled = chain()
    execution_cancel(pk=cancelled.pk, actor=OWNER_A)
    assert execution_retry(pk=cancelled.pk, reset_steps=False, actor=OWNER_A).status == "running"


def test_retry_is_refused_once_retry_count_reaches_max_retries() -> None:
    execution = chain(1, max_retries=2)
    execution_start(pk=execution.pk, actor=OWNER_A)
    for _ in range(2):
        fail_step(execution, 0)
        execution_retry(pk=execution.pk, actor=OWNER_A)
    fail_step(execution, 0)
    with pytest.raises(ConflictError, match="maxRetries 2"):
        execution_retry(pk=execution.pk, actor=OWNER_A)
    current = fresh(execution)
    assert current.status == "failed" and current.retry_count == 2 and len(current.retry_attempts) == 2


@pytest.mark.parametrize("status", ["pending", "running", "completed"])
def test_retry_from_a_state_that_is_not_finished_badly_is_409(status: str) -> None:
    execution = chain()
    Execution.objects.filter(pk=execution.pk).update(status=status)
    with pytest.raises(ConflictError):
        execution_retry(pk=execution.pk, actor=OWNER_A)
    assert fresh(execution).retry_count == 0


# --- late, duplicate and stray answers ------------------------------------------------------


def test_a_second_result_for_a_finished_step_changes_nothing() -> None:
    execution = chain(2)
    execution_start(pk=execution.pk, actor=OWNER_A)
    original = fresh(execution).steps[0]["sentMessageId"]
    answer_command(original, result={"n": 1})
    before = fresh(execution)
    answer_command(original, "error", error={"code": "X", "message": "late"})
    after = fresh(execution)
    assert after.steps == before.steps and after.status == "running"


def test_an_answer_from_another_node_is_refused() -> None:
    NodeFactory.create(node_id="node-gpu-02")
    execution = chain(1)
    execution_start(pk=execution.pk, actor=OWNER_A)
    with pytest.raises(NotFoundError):
        answer(execution, 0, node_id="node-gpu-02")
    assert statuses(execution) == ["running"]


def test_an_answer_to_a_hand_sent_command_naming_an_execution_changes_nothing() -> None:
    from nodes.commands import send_command

    execution = chain(1)
    execution_start(pk=execution.pk, actor=OWNER_A)
    forged = send_command(
        org_id=ORG_A,
        node_id=NODE,
        type="model.download",
        metadata={"executionId": execution.execution_id, "stepIndex": 0},
    )
    answer_command(forged.message_id)
    assert statuses(execution) == ["running"]


def test_the_sweep_command_runs_one_pass_and_reports_it() -> None:
    from io import StringIO

    from django.core.management import call_command

    execution = ExecutionFactory.create(steps=[step(0, timeoutSeconds=1)])
    execution_start(pk=execution.pk, actor=OWNER_A)
    Execution.objects.filter(pk=execution.pk).update(next_check_at=timezone.now() - timedelta(seconds=1))
    steps = fresh(execution).steps
    steps[0]["startedAt"] = (timezone.now() - timedelta(seconds=5)).isoformat()
    Execution.objects.filter(pk=execution.pk).update(steps=steps)
    out = StringIO()
    call_command("sweep", stdout=out)
    assert "executions_advanced: 1" in out.getvalue()
    assert fresh(execution).status == "timeout"
