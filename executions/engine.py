"""The execution engine: start, cancel, retry, DAG dispatch, node results, timeouts.

State machines (ARCHITECTURE.md "Execution engine"):

    execution  pending -> running -> completed | failed | timeout | cancelled
               pending -> cancelled;  failed | timeout | cancelled -> running (retry)
    step       pending -> running -> completed | failed | skipped

Every transition runs in one transaction holding the execution's row lock (SELECT FOR UPDATE),
on a copy of the row read under that lock. What it sends to nodes is a row of the outbox
(`nodes.commands.send_command`) written in the same transaction and delivered after commit, so a
rolled-back transition sends nothing and a committed one is never lost (the sweep delivers what a
crash left queued). Terminal executions absorb every later event: a transition checks the state
it starts from, and a node's answer counts only for the command its step is waiting for
(`sentMessageId`), on a command that is still open (a CAS in `nodes.commands`).

Dispatch happens inside the transition that makes steps ready — the start request, the node's
result, the sweep's timeout — rather than in a separate task: no hop, and no window in which a
step is ready but nobody owns sending it. The periodic sweep (`executions_sweep`: Celery beat in
production, the in-process ticker in the embedded default) applies deadlines; it claims rows with
SKIP LOCKED so several workers can run it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from aiwm_project import live_events
from aiwm_project.auth import Principal
from aiwm_project.correlation import execution_context
from aiwm_project.datetimes import format_datetime, parse_iso
from aiwm_project.exceptions import ConflictError, NotFoundError
from aiwm_project.services import lock_live
from executions import effects
from executions.choices import (
    ACTIVE_STATUSES,
    COMMAND_PRIORITY_BY_CATEGORY,
    DONE_STEP_STATUSES,
    RERUN_STEP_STATUSES,
    RETRYABLE_STATUSES,
    ExecutionStatus,
    StepStatus,
)
from executions.models import Execution
from executions.steps import StepDocument, reset_step
from nodes import commands
from nodes.choices import CommandPriority, CommandStatus
from nodes.models import NodeCommand

logger = logging.getLogger("aiwm.executions.engine")

RUNNING = ExecutionStatus.RUNNING
# Written by the engine only (the serializer and execution_update never touch them).
ENGINE_FIELDS = (
    "status",
    "progress",
    "steps",
    "started_at",
    "completed_at",
    "timeout_at",
    "next_check_at",
    "result",
    "error",
    "sent_message_ids",
    "received_message_ids",
    "retry_count",
    "retry_attempts",
    "updated_by",
    "updated_at",
)
SWEEP_BATCH = 200


def _save(execution: Execution, now: datetime, actor_id: str | None = None) -> None:
    """Write the transition; live subscribers hear of it (`execution.progress`) once it commits."""
    execution.updated_at = now
    if actor_id is not None:
        execution.updated_by = actor_id
    execution.save(update_fields=ENGINE_FIELDS)
    live_events.publish(
        execution.owner_org_id,
        "execution.progress",
        {
            "_id": execution.pk,
            "executionId": execution.execution_id,
            "status": execution.status,
            "progress": execution.progress,
            "error": execution.error,
            "steps": [
                {"index": s["index"], "status": s["status"], "progress": s["progress"], "nodeId": s["nodeId"]}
                for s in execution.steps
            ],
            "updatedAt": format_datetime(now),
        },
    )


# --- client requests --------------------------------------------------------------------------


def execution_start(*, pk: str, force: bool = False, actor: Principal) -> Execution:
    """pending -> running, dispatching every step with no unmet dependency.

    A running execution is restarted only with `force` (409 otherwise): its running steps are
    withdrawn (their nodes get `command.cancel`) and every step starts again from pending. A
    finished execution is not started again: that is `retry` (409 naming it).
    """
    now = timezone.now()
    with _locked(pk) as execution:
        if execution.status == RUNNING and not force:
            raise ConflictError(
                f"Execution {execution.execution_id!r} is already running; send force=true to restart it"
            )
        if execution.status not in ACTIVE_STATUSES:
            raise ConflictError(
                f"Execution {execution.execution_id!r} is {execution.status}; use retry to run it again"
            )
        if execution.status == RUNNING:
            _withdraw_running_steps(execution, reason="execution restarted (force)")
        execution.steps = [reset_step(step) for step in execution.steps]
        execution.error = execution.result = execution.completed_at = None
        _begin(execution, now)
        _save(execution, now, actor.user_id)
    return execution


def execution_cancel(*, pk: str, reason: str = "", actor: Principal) -> Execution:
    """pending | running -> cancelled with error USER_CANCELLED; running steps get `command.cancel`."""
    now = timezone.now()
    reason = reason.strip() or "Cancelled by user"
    with _locked(pk) as execution:
        if execution.status not in ACTIVE_STATUSES:
            raise ConflictError(
                f"Execution {execution.execution_id!r} is {execution.status}; "
                "only a pending or running execution can be cancelled"
            )
        _finish(execution, ExecutionStatus.CANCELLED, now, error={"code": "USER_CANCELLED", "message": reason})
        _save(execution, now, actor.user_id)
    return execution


def execution_retry(*, pk: str, reset_steps: bool = True, actor: Principal) -> Execution:
    """failed | timeout | cancelled -> running, while retryCount < maxRetries (409 after).

    `reset_steps` true: every step runs again. False: completed steps keep their results; failed
    and skipped steps, and every step after them in the graph, run again (pending steps were
    never run and stay pending). A retried step gets a new command, so an answer to the previous
    attempt's command changes nothing.
    """
    now = timezone.now()
    with _locked(pk) as execution:
        if execution.status not in RETRYABLE_STATUSES:
            raise ConflictError(
                f"Execution {execution.execution_id!r} is {execution.status}; "
                "only a failed, timed-out or cancelled execution can be retried"
            )
        if execution.retry_count >= execution.max_retries:
            raise ConflictError(
                f"Execution {execution.execution_id!r} has been retried {execution.retry_count} times "
                f"(maxRetries {execution.max_retries})"
            )
        again = {s["index"] for s in execution.steps} if reset_steps else _failed_and_after(execution.steps)
        execution.steps = [reset_step(s) if s["index"] in again else s for s in execution.steps]
        execution.retry_count += 1
        execution.retry_attempts = [*execution.retry_attempts, format_datetime(now)]
        execution.error = execution.result = execution.completed_at = None
        _begin(execution, now)
        _save(execution, now, actor.user_id)
    return execution


@contextmanager
def _locked(pk: str) -> Iterator[Execution]:
    """The execution under its row lock for one transaction; log lines inside name it."""
    with transaction.atomic():
        execution = lock_live(Execution, pk)
        with execution_context(execution.execution_id):
            yield execution


def _failed_and_after(steps: list[StepDocument]) -> set[int]:
    """Failed and skipped steps and everything that depends on them, directly or not."""
    again = {s["index"] for s in steps if s["status"] in RERUN_STEP_STATUSES}
    grew = True
    while grew:
        after = {s["index"] for s in steps if s["index"] not in again and again.intersection(s["dependsOn"])}
        again |= after
        grew = bool(after)
    return again


def _begin(execution: Execution, now: datetime) -> None:
    execution.status = RUNNING
    execution.started_at = now
    execution.timeout_at = now + timedelta(seconds=execution.timeout_seconds)
    _dispatch_ready(execution, now)
    _settle(execution, now)


# --- what nodes answer (the gateway calls this for every `command.result`) -------------------


def execution_apply_result(*, org_id: str, node_id: str, message_id: str, data: dict[str, Any]) -> NodeCommand:
    """A node's `command.result` (success, error or a progress report) for one of its commands.

    Locks the execution the command belongs to (its metadata's `executionId`), then moves the
    command by a CAS (`nodes.commands.command_apply_result`): the lock order of every transition
    here, so a result racing a cancel, a timeout or a retry is applied before or after it, never
    in between. Only when the command changed does the step waiting for exactly that command
    move (completed, failed or skipped, or its progress), and what that makes ready is dispatched
    in the same transaction. A command no execution owns (sent by hand) moves alone.
    Raises ValidationFailed / NotFoundError for an answer naming no command of this node.
    """
    command = commands.command_answered(
        org_id=org_id, node_id=node_id, original_message_id=data.get("originalMessageId")
    )
    execution_id = command.metadata.get("executionId")
    owner = execution_id if isinstance(execution_id, str) else None
    # No savepoint: nothing here is caught and retried inside the caller's transaction.
    with execution_context(owner), transaction.atomic(savepoint=False):
        execution = _lock_owner(command)
        if commands.command_apply_result(command=command, data=data, message_id=message_id):
            found = _waiting_step(command, execution)
            if found is not None:
                _advance(*found, command, message_id)
    return command


def _lock_owner(command: NodeCommand) -> Execution | None:
    """The execution a command's metadata names, under its row lock (None for a command sent by hand)."""
    execution_id = command.metadata.get("executionId")
    if not isinstance(execution_id, str):
        return None
    return Execution.objects.for_org(command.owner_org_id).select_for_update().filter(execution_id=execution_id).first()


def _advance(execution: Execution, step: StepDocument, command: NodeCommand, message_id: str) -> None:
    """Move the step by its command's new state, dispatch what that unblocks, and save."""
    now = timezone.now()
    if command.status == CommandStatus.SUCCEEDED:
        execution.received_message_ids = [*execution.received_message_ids, message_id]
        step.update(
            {
                "status": StepStatus.COMPLETED,
                "progress": 100,
                "completedAt": format_datetime(now),
                "result": command.result,
                "receivedMessageId": message_id,
            }
        )
        effects.step_succeeded(execution, step)
        _dispatch_ready(execution, now)
    elif command.status == CommandStatus.FAILED:
        execution.received_message_ids = [*execution.received_message_ids, message_id]
        step.update({"progress": int(command.progress), "receivedMessageId": message_id})
        _step_failed(execution, step, now, command.error or {"code": "UNKNOWN", "message": ""})
        _dispatch_ready(execution, now)
    else:  # a progress report
        step["progress"] = int(command.progress)
        effects.step_progress(execution, step)
    _settle(execution, now)
    _save(execution, now)


def _waiting_step(command: NodeCommand, execution: Execution | None) -> tuple[Execution, StepDocument] | None:
    """The running execution and running step waiting for exactly this command, or None (logged).

    `execution` is the row `_lock_owner` read under its lock. Anything else — a finished
    or cancelled execution, a step no longer running, an earlier attempt's command, a command
    someone sent by hand with this metadata — is a late or stray answer and changes nothing.
    """
    metadata = command.metadata
    index = metadata.get("stepIndex")
    why = None
    if execution is None:
        why = "no such execution"
    elif execution.status != RUNNING:
        why = f"execution is {execution.status}"
    elif not isinstance(index, int) or not 0 <= index < len(execution.steps):
        why = "no such step"
    elif execution.steps[index]["sentMessageId"] != command.message_id:
        why = "not the step's current command"
    elif execution.steps[index]["status"] != StepStatus.RUNNING:
        why = f"step is {execution.steps[index]['status']}"
    if why:
        logger.info("answer to command %s (%s) ignored: %s", command.message_id, metadata, why)
        return None
    assert execution is not None and isinstance(index, int)
    return execution, execution.steps[index]


# --- the sweep --------------------------------------------------------------------------------


def executions_sweep(*, now: datetime | None = None) -> int:
    """Apply every deadline that has passed: step timeouts (STEP_TIMEOUT) and execution timeouts.

    Claims each due execution with SELECT ... FOR UPDATE SKIP LOCKED, so sweeps in several
    workers share the work and never wait on a row another transition holds (it is looked at
    again on the next pass). Returns how many executions it changed.
    """
    now = now or timezone.now()
    due = list(
        Execution.objects.filter(status=RUNNING, is_deleted=False, next_check_at__lte=now)
        .order_by("next_check_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    changed = 0
    for pk in due:
        with transaction.atomic():
            execution = (
                Execution.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, status=RUNNING, is_deleted=False, next_check_at__lte=now)
                .first()
            )
            if execution is None:
                continue
            with execution_context(execution.execution_id):
                _apply_deadlines(execution, now)
                _settle(execution, now)
                _save(execution, now)
            changed += 1
    return changed


def _step_deadline(step: StepDocument) -> datetime | None:
    started, limit = parse_iso(step["startedAt"]), step["timeoutSeconds"]
    if step["status"] != StepStatus.RUNNING or started is None or not limit:
        return None
    return started + timedelta(seconds=limit)


def _apply_deadlines(execution: Execution, now: datetime) -> None:
    """Steps first: when a step's deadline and the execution's pass together, the step's error
    (which names the node and the step) is the more useful one."""
    for step in execution.steps:
        deadline = _step_deadline(step)
        if deadline is None or deadline > now or execution.status != RUNNING:
            continue
        message = f"Step {step['index']} did not finish within {step['timeoutSeconds']} seconds"
        commands.command_withdraw(message_id=step["sentMessageId"], reason=message, status=CommandStatus.EXPIRED)
        _step_failed(execution, step, now, {"code": "STEP_TIMEOUT", "message": message}, timed_out=True)
    if execution.status == RUNNING and execution.timeout_at and execution.timeout_at <= now:
        message = f"Execution did not finish within {execution.timeout_seconds} seconds"
        _finish(execution, ExecutionStatus.TIMEOUT, now, error={"code": "EXECUTION_TIMEOUT", "message": message})
        return
    _dispatch_ready(execution, now)


# --- transitions on the copy held under the lock ---------------------------------------------


def _dispatch_ready(execution: Execution, now: datetime) -> None:
    """Send every step whose dependencies are all completed or skipped; repeat while steps without
    a command (which complete at once) make more steps ready."""
    while execution.status == RUNNING:
        done = {s["index"] for s in execution.steps if s["status"] in DONE_STEP_STATUSES}
        ready = [s for s in execution.steps if s["status"] == StepStatus.PENDING and done.issuperset(s["dependsOn"])]
        if not ready:
            return
        for step in ready:
            if execution.status == RUNNING:
                _dispatch(execution, step, now)


def _dispatch(execution: Execution, step: StepDocument, now: datetime) -> None:
    step.update({"status": StepStatus.RUNNING, "startedAt": format_datetime(now), "progress": 0})
    command = step.get("command")
    if not command:  # a marker step: nothing for a node to do
        step.update({"status": StepStatus.COMPLETED, "progress": 100, "completedAt": format_datetime(now)})
        return
    timeout = step["timeoutSeconds"] or execution.timeout_seconds
    try:
        sent = commands.send_command(
            org_id=execution.owner_org_id,
            # Never empty: build_steps refuses a step that has a command but no node.
            node_id=step["nodeId"] or "",
            type=command["type"],
            resource=dict(command["resource"]),
            data=command["data"],
            metadata={
                "executionId": execution.execution_id,
                "stepIndex": step["index"],
                "timeout": timeout,
                "priority": COMMAND_PRIORITY_BY_CATEGORY.get(execution.category, CommandPriority.NORMAL),
            },
            actor_id=execution.updated_by,
        )
    except NotFoundError as exc:  # the node was deleted after the execution was defined
        _step_failed(execution, step, now, {"code": "NODE_NOT_FOUND", "message": exc.message})
        return
    step["sentMessageId"] = sent.message_id
    execution.sent_message_ids = [*execution.sent_message_ids, sent.message_id]
    effects.step_dispatched(execution, step)


def _step_failed(
    execution: Execution, step: StepDocument, now: datetime, error: dict[str, Any], *, timed_out: bool = False
) -> None:
    """A failed optional step is skipped (its error kept) and the run goes on; a required one ends it."""
    step.update(
        {
            "status": StepStatus.SKIPPED if step["optional"] else StepStatus.FAILED,
            "error": error,
            "completedAt": format_datetime(now),
        }
    )
    effects.step_failed(execution, step)
    if step["optional"]:
        return
    status = ExecutionStatus.TIMEOUT if timed_out else ExecutionStatus.FAILED
    _finish(execution, status, now, error={**error, "nodeId": step["nodeId"], "stepIndex": step["index"]})


def _finish(execution: Execution, status: str, now: datetime, *, error: dict[str, Any] | None = None) -> None:
    """End the run: nothing new is dispatched, steps still running are withdrawn."""
    execution.status = status
    execution.completed_at = now
    execution.error = error
    execution.next_check_at = None
    reason = (error or {}).get("message") or f"execution {status}"
    _withdraw_running_steps(execution, reason=f"execution {status}: {reason}")
    effects.execution_finished(execution)


def _withdraw_running_steps(execution: Execution, *, reason: str) -> None:
    now = timezone.now()
    for step in _running(execution.steps):
        sent = step["sentMessageId"]
        if sent:
            commands.command_withdraw(message_id=sent, reason=reason)
        step.update(
            {
                "status": StepStatus.FAILED,
                "completedAt": format_datetime(now),
                "error": {"code": "CANCELLED", "message": reason},
            }
        )
        effects.step_failed(execution, step)  # e.g. a withdrawn download leaves its model in error, not downloading


def _running(steps: Iterable[StepDocument]) -> list[StepDocument]:
    return [s for s in steps if s["status"] == StepStatus.RUNNING]


def _settle(execution: Execution, now: datetime) -> None:
    """Derived state: completion, progress, the execution's result and the sweep's next look."""
    steps = execution.steps
    if execution.status == RUNNING and all(s["status"] in DONE_STEP_STATUSES for s in steps):
        execution.status = ExecutionStatus.COMPLETED
        execution.completed_at = now
        execution.result = {"steps": {str(s["index"]): s["result"] for s in steps if s.get("result") is not None}}
        effects.execution_finished(execution)
    if execution.status == ExecutionStatus.COMPLETED:
        execution.progress = 100
    elif steps:
        execution.progress = sum(
            100 if s["status"] in DONE_STEP_STATUSES else int(s["progress"] or 0) for s in steps
        ) // len(steps)
    if execution.status != RUNNING:
        execution.next_check_at = None
        return
    deadlines = [d for d in (_step_deadline(s) for s in steps) if d is not None]
    execution.next_check_at = min([execution.timeout_at, *deadlines]) if execution.timeout_at else None
