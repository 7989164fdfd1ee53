"""Agent and Instruction writes that need more than the shared services: the agent -> instruction rule.

An Instruction that live agents still use cannot be deleted or renamed (409 naming the agents),
so an operator cannot leave agents pointing at nothing. Both sides lock the instruction's row:
agent writes that set `instructionId` take it (FOR NO KEY UPDATE) before checking the reference,
and the instruction's delete/rename takes it (FOR UPDATE) before looking for agents. Whichever
commits first, the other then sees it: no agent is left referring to a deleted instruction.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from agents.models import Agent, Instruction
from aiwm_project import services
from aiwm_project.auth import Principal
from aiwm_project.exceptions import ConflictError, NotFoundError

# How many agent ids a 409 names; the total is always given.
NAMED_AGENTS = 10


def _lock_instruction_for_reference(*, org_id: str, instruction_id: str | None) -> None:
    """Hold the instruction an agent is about to reference until the agent write commits.

    Must run inside `transaction.atomic()`. A missing instruction is not an error here: the
    shared reference check that follows reports it (400).
    """
    if not instruction_id:
        return
    rows = Instruction.objects.for_org(org_id).filter(instruction_id=instruction_id)
    list(rows.select_for_update(no_key=True).values_list("pk", flat=True))


def _refuse_if_used(*, instance: Instruction, action: str) -> None:
    agent_ids = list(
        Agent.objects.for_org(instance.owner_org_id)
        .filter(instruction_id=instance.instruction_id)
        .order_by("agent_id")
        .values_list("agent_id", flat=True)[: NAMED_AGENTS + 1]
    )
    if not agent_ids:
        return
    total = len(agent_ids)
    if total > NAMED_AGENTS:
        total = Agent.objects.for_org(instance.owner_org_id).filter(instruction_id=instance.instruction_id).count()
    named = ", ".join(agent_ids[:NAMED_AGENTS]) + (f" and {total - NAMED_AGENTS} more" if total > NAMED_AGENTS else "")
    raise ConflictError(
        f"Instruction {instance.instruction_id!r} is used by {total} agent(s): {named}; "
        f"reassign or delete them before you {action} it",
        [f"agentId: {agent_id}" for agent_id in agent_ids[:NAMED_AGENTS]],
    )


def _lock_instruction(instance: Instruction) -> None:
    locked = Instruction.objects.filter(pk=instance.pk, is_deleted=False).select_for_update()
    if not list(locked.values_list("pk", flat=True)):
        raise NotFoundError(f"Instruction with ID {instance.pk} not found")


def agent_create(*, data: dict[str, Any], actor: Principal, model: type[Agent] = Agent) -> Agent:
    """Create an agent; locks the referenced instruction's row so it cannot be deleted meanwhile."""
    with transaction.atomic():
        _lock_instruction_for_reference(org_id=actor.org_id, instruction_id=data.get("instruction_id"))
        return services.entity_create(model=model, data=data, actor=actor)


def agent_update(*, instance: Agent, data: dict[str, Any], actor: Principal) -> Agent:
    """Partial update; when `instructionId` changes, locks the new instruction's row as agent_create does."""
    with transaction.atomic():
        if data.get("instruction_id") and data["instruction_id"] != instance.instruction_id:
            _lock_instruction_for_reference(org_id=actor.org_id, instruction_id=data["instruction_id"])
        return services.entity_update(instance=instance, data=data, actor=actor)


def instruction_update(*, instance: Instruction, data: dict[str, Any], actor: Principal) -> Instruction:
    """Partial update. Renaming `instructionId` while live agents use it is a 409 (they would dangle).

    Locks the instruction's row (FOR UPDATE) only for a rename.
    """
    with transaction.atomic():
        if "instruction_id" in data and data["instruction_id"] != instance.instruction_id:
            _lock_instruction(instance)
            _refuse_if_used(instance=instance, action="rename")
        return services.entity_update(instance=instance, data=data, actor=actor)


def instruction_delete(*, instance: Instruction, actor: Principal) -> Instruction:
    """Soft delete, refused (409, naming the agents) while live agents use the instruction.

    Locks the instruction's row (FOR UPDATE) for the check and the delete.
    """
    with transaction.atomic():
        _lock_instruction(instance)
        _refuse_if_used(instance=instance, action="delete")
        services.entity_delete(instance=instance, actor=actor)
    return instance
