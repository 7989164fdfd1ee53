"""Conversation and message writes: messages keep their conversation's counters exact.

Counter rules: creating a message adds 1 to `totalMessages` and its `usage.totalTokens` (0 when
absent) to `totalTokens`; deleting it subtracts the same; changing its `usage` moves
`totalTokens` by the difference. Each change is an `UPDATE ... SET n = n + k` (F expression)
in the same transaction as the message write, never a read-modify-save, so concurrent
messages of one conversation serialize on its row lock and no increment is lost. The same
UPDATE stamps the conversation's `updatedAt`, so `sort=-updatedAt` puts recent activity first.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from aiwm_project.auth import Principal
from aiwm_project.exceptions import ValidationFailed
from aiwm_project.ids import new_object_id
from aiwm_project.services import entity_create, entity_delete, entity_update, lock_live
from conversations.models import Conversation, Message, usage_tokens


def _count_on_conversation(*, org_id: str, conversation_id: str, messages: int, tokens: int) -> int:
    """Move the live conversation's counters by (messages, tokens); returns the rows changed (0 or 1).

    Takes the conversation's row lock until the caller's transaction commits. Never below 0:
    rows changed outside these services must not make a conversation show negative totals.
    """
    return (
        Conversation.objects.for_org(org_id)
        .filter(conversation_id=conversation_id)
        .update(
            total_messages=Greatest(F("total_messages") + messages, Value(0)),
            total_tokens=Greatest(F("total_tokens") + tokens, Value(0)),
            updated_at=timezone.now(),
        )
    )


def message_create(*, model: type[Message] = Message, data: dict[str, Any], actor: Principal) -> Message:
    """Insert a message and count it on its conversation, in one transaction.

    `messageId` defaults to the new `_id`. The counter UPDATE holds the conversation's row lock
    to commit; if the conversation was deleted after validation, nothing is written (400).
    Sends nothing.
    """
    data = dict(data)
    if not data.get("message_id"):
        data["id"] = data["message_id"] = new_object_id()
    with transaction.atomic():
        message = entity_create(model=model, data=data, actor=actor)
        counted = _count_on_conversation(
            org_id=actor.org_id,
            conversation_id=message.conversation_id,
            messages=1,
            tokens=usage_tokens(message.usage),
        )
        if not counted:
            raise ValidationFailed([f"conversationId: Conversation {message.conversation_id!r} does not exist"])
    return message


def message_update(*, instance: Message, data: dict[str, Any], actor: Principal) -> Message:
    """Partial update; a new `usage` moves the conversation's `totalTokens` by the difference.

    A message cannot move to another conversation (the counters it contributed belong to the
    first). Holds SELECT FOR UPDATE on the message row, so two concurrent edits of its usage
    cannot both compute their difference from the same old value.
    """
    if "conversation_id" in data and data["conversation_id"] != instance.conversation_id:
        raise ValidationFailed(["conversationId: a message cannot be moved to another conversation"])
    with transaction.atomic():
        before = lock_live(Message, instance.pk)
        message = entity_update(instance=instance, data=data, actor=actor)
        if "usage" in data:
            delta = usage_tokens(data["usage"]) - usage_tokens(before.usage)
            if delta:
                _count_on_conversation(
                    org_id=before.owner_org_id, conversation_id=before.conversation_id, messages=0, tokens=delta
                )
    return message


def message_delete(*, instance: Message, actor: Principal) -> Message:
    """Soft-delete a message and take it off its conversation's counters, in one transaction.

    Holds SELECT FOR UPDATE on the message row (so the tokens subtracted are the ones counted),
    then the conversation's row lock for the counter UPDATE. A second delete is a 404 and
    subtracts nothing.
    """
    with transaction.atomic():
        before = lock_live(Message, instance.pk)
        entity_delete(instance=instance, actor=actor)
        _count_on_conversation(
            org_id=before.owner_org_id,
            conversation_id=before.conversation_id,
            messages=-1,
            tokens=-usage_tokens(before.usage),
        )
    return instance


def conversation_delete(*, instance: Conversation, actor: Principal) -> Conversation:
    """Soft-delete the conversation and its live messages in one transaction.

    Its messages go with it: left behind, they would show up under a new conversation that
    reuses the id. A message being created concurrently either commits first (and is deleted
    here) or finds the conversation gone and is rolled back (see `message_create`).
    """
    with transaction.atomic():
        entity_delete(instance=instance, actor=actor)
        Message.objects.filter(
            owner_org_id=instance.owner_org_id, conversation_id=instance.conversation_id, is_deleted=False
        ).update(
            is_deleted=True, deleted_at=instance.deleted_at, updated_by=actor.user_id, updated_at=instance.deleted_at
        )
    return instance
