"""Execution writes a client makes: create with step validation, the updates it may make, soft delete.

Nothing here sends anything to a node: running an execution (start, cancel, retry, step results,
timeouts) is the engine's (`executions.engine`), which creates its workflows through `execution_create`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from aiwm_project.auth import Principal
from aiwm_project.exceptions import ConflictError, NotFoundError, ValidationFailed
from aiwm_project.naming import camelize
from aiwm_project.services import entity_create
from executions.choices import ExecutionStatus
from executions.models import Execution
from executions.steps import build_steps, involved_node_ids, step_definition
from nodes.models import Node

# Labels: harmless to change at any time.
UPDATABLE_ANY_TIME = ("name", "description")
# The workflow's definition: the engine reads it when it starts, so it is frozen from then on.
UPDATABLE_WHILE_PENDING = ("timeout_seconds", "max_retries", "steps")
# Identity and classification: URLs, node commands, statistics and resource lookups rely on them.
# (A blank optional value arrives as None: the serializer stores "" as NULL, see `blank_is_null`.)
FIXED_AFTER_CREATE = (
    "execution_id",
    "category",
    "type",
    "parent_execution_id",
    "resource_type",
    "resource_id",
    "node_id",
)
# What a client defines (at create; an update may send them all, which of them it may change is
# decided above). Status, progress, timing, result, error, message tracking and retry bookkeeping
# are the engine's.
CLIENT_FIELDS = frozenset({*UPDATABLE_ANY_TIME, *UPDATABLE_WHILE_PENDING, *FIXED_AFTER_CREATE})


def _check_fields(data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unexpected = set(data) - allowed
    if unexpected:
        # A programming error in the caller (the serializer never passes these), not bad input.
        raise TypeError(f"not client-writable execution fields: {', '.join(sorted(unexpected))}")


def _node_problems(*, org_id: str, node_id: str | None, definitions: Sequence[Mapping[str, Any]]) -> list[str]:
    """The execution's node and every node a step names must be live nodes of the organization (one query)."""
    named = [node_id, *(step.get("nodeId") for step in definitions)]
    wanted = {n for n in named if n}
    if not wanted:
        return []
    live = set(Node.objects.for_org(org_id).filter(node_id__in=wanted).values_list("node_id", flat=True))
    problems = []
    if node_id and node_id not in live:
        problems.append(f"nodeId: Node {node_id!r} does not exist")
    for position, step in enumerate(definitions):
        step_node = step.get("nodeId")
        if step_node and step_node not in live:
            problems.append(f"steps[{position}].nodeId: Node {step_node!r} does not exist")
    return problems


def execution_create(*, model: type[Execution] = Execution, data: Mapping[str, Any], actor: Principal) -> Execution:
    """Create a pending execution in the actor's organization from a validated definition.

    Steps are checked as a whole (indexes, dependencies, cycles, commands, nodes; see
    `executions.steps.build_steps`) and stored pending with progress 0, whatever run state the
    caller sent. With a `parent_execution_id`, the parent's row is locked (SELECT FOR UPDATE) to
    append this execution to its `child_execution_ids`. Sends nothing: the engine starts it.
    """
    _check_fields(data, CLIENT_FIELDS)
    fields = dict(data)
    # The contract describes executionId as a UUID: generated when the caller does not choose one.
    fields["execution_id"] = fields.get("execution_id") or str(uuid.uuid4())
    definitions = list(fields.pop("steps", None) or [])
    steps, problems = build_steps(definitions, default_node_id=fields.get("node_id"))
    problems += _node_problems(org_id=actor.org_id, node_id=fields.get("node_id"), definitions=definitions)
    if problems:
        raise ValidationFailed(problems)
    fields["steps"] = steps
    fields["involved_node_ids"] = involved_node_ids(fields.get("node_id"), steps)
    with transaction.atomic():
        execution = entity_create(model=model, data=fields, actor=actor)
        if execution.parent_execution_id:
            _attach_to_parent(execution=execution, org_id=actor.org_id)
    return execution


def _attach_to_parent(*, execution: Execution, org_id: str) -> None:
    """Append the child to its parent's list under the parent's row lock, so concurrent children all land."""
    parent = (
        Execution.objects.for_org(org_id)
        .select_for_update()
        .filter(execution_id=execution.parent_execution_id)
        .only("id", "child_execution_ids")
        .first()
    )
    if parent is None:
        # Deleted between the reference check and the lock: roll the child back.
        raise ValidationFailed([f"parentExecutionId: Execution {execution.parent_execution_id!r} does not exist"])
    Execution.objects.filter(pk=parent.pk).update(
        child_execution_ids=[*parent.child_execution_ids, execution.execution_id], updated_at=timezone.now()
    )


def execution_update(*, instance: Execution, data: Mapping[str, Any], actor: Principal) -> Execution:
    """Apply a client's partial update.

    `name` and `description` may change at any time. `timeoutSeconds`, `maxRetries` and `steps`
    only while the execution is pending (409 otherwise), by a compare-and-swap on
    `status=pending`, so an edit cannot slip in after the engine has started the run. Identity and
    classification fields are fixed (400 when sent with a different value; the same value is
    accepted, so a GET body can be sent back). Sends nothing.
    """
    _check_fields(data, CLIENT_FIELDS)
    problems = [
        f"{camelize(field)}: cannot be changed after the execution is created"
        for field in FIXED_AFTER_CREATE
        if field in data and data[field] != getattr(instance, field)
    ]
    changes: dict[str, Any] = {field: data[field] for field in UPDATABLE_ANY_TIME if field in data}
    definition: dict[str, Any] = {
        field: data[field]
        for field in ("timeout_seconds", "max_retries")
        if field in data and data[field] != getattr(instance, field)
    }
    if "steps" in data:
        definitions = list(data["steps"] or [])
        steps, step_problems = build_steps(definitions, default_node_id=instance.node_id)
        problems += step_problems or _node_problems(org_id=actor.org_id, node_id=None, definitions=definitions)
        if not problems and [step_definition(s) for s in steps] != [step_definition(s) for s in instance.steps]:
            definition["steps"] = steps
            definition["involved_node_ids"] = involved_node_ids(instance.node_id, steps)
    if problems:
        raise ValidationFailed(problems)
    if definition and instance.status != ExecutionStatus.PENDING:
        raise ConflictError(_frozen_message(instance, instance.status, definition))

    fields = {**changes, **definition, "updated_by": actor.user_id, "updated_at": timezone.now()}
    rows = Execution.objects.filter(pk=instance.pk, is_deleted=False)
    if definition:
        rows = rows.filter(status=ExecutionStatus.PENDING)
    if not rows.update(**fields):
        status = Execution.objects.filter(pk=instance.pk, is_deleted=False).values_list("status", flat=True).first()
        if status is None:
            raise NotFoundError(f"Execution with ID {instance.pk} not found")
        raise ConflictError(_frozen_message(instance, status, definition))
    for field, value in fields.items():
        setattr(instance, field, value)
    return instance


def _frozen_message(instance: Execution, status: str, definition: Mapping[str, Any]) -> str:
    names = ", ".join(camelize(field) for field in definition if field != "involved_node_ids")
    return f"Execution {instance.execution_id!r} is {status}: {names} can only be changed while it is pending"


def execution_delete(*, instance: Execution, actor: Principal) -> Execution:
    """Soft delete; refused (409) while running, because nodes still hold its commands.

    A compare-and-swap on the status, so a delete cannot race the engine's start.
    """
    now = timezone.now()
    deleted = (
        Execution.objects.filter(pk=instance.pk, is_deleted=False)
        .exclude(status=ExecutionStatus.RUNNING)
        .update(is_deleted=True, deleted_at=now, updated_by=actor.user_id, updated_at=now)
    )
    if not deleted:
        if Execution.objects.filter(pk=instance.pk, is_deleted=False).exists():
            raise ConflictError(f"Execution {instance.execution_id!r} is running; cancel it before deleting it")
        raise NotFoundError(f"Execution with ID {instance.pk} not found")
    instance.is_deleted, instance.deleted_at, instance.updated_by, instance.updated_at = True, now, actor.user_id, now
    return instance
