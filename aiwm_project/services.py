"""Shared write services for owned entities: create, update, soft delete, reference checks.

App services build on these (e.g. `message_create` also updates its conversation); viewsets,
admin actions and commands call services, never `save()` on their own.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.apps import apps
from django.db import IntegrityError, transaction
from django.utils import timezone

from aiwm_project.auth import Principal
from aiwm_project.exceptions import ConflictError, NotFoundError, ValidationFailed
from aiwm_project.ids import is_business_id
from aiwm_project.models import OwnedModel
from aiwm_project.naming import camelize

M = TypeVar("M", bound=OwnedModel)


def lock_live(model: type[M], pk: str) -> M:
    """The live row, read under its row lock (SELECT FOR UPDATE, inside the caller's transaction);
    NotFoundError when it is gone or soft-deleted."""
    locked = model.objects.select_for_update().filter(pk=pk, is_deleted=False).first()
    if locked is None:
        raise NotFoundError(f"{model.entity_label} with ID {pk} not found")
    return locked


def validate_references(*, model: type[OwnedModel], org_id: str, data: dict[str, Any], lock: bool = False) -> None:
    """Every business-id reference in `data` must name a live record of the same organization.

    With `lock=True` (inside a transaction) the records named by `protected_references` are held
    with SELECT ... FOR NO KEY UPDATE until the write commits, so a concurrent delete of one of
    them waits and then sees this row (and refuses), instead of both succeeding.
    """
    errors = []
    for field, target_label in model.references.items():
        value = data.get(field)
        if value in (None, "", []):
            continue
        target: type[OwnedModel] = apps.get_model(target_label)  # type: ignore[assignment]
        if isinstance(value, list):  # a list of ids (an agent's toolIds): each one must exist
            known = set(
                target.objects.for_org(org_id)
                .filter(**{f"{target.business_id_field}__in": value})
                .values_list(target.business_id_field, flat=True)
            )
            errors += [
                f"{camelize(field)}: {target.entity_label} {v!r} does not exist" for v in value if v not in known
            ]
            continue
        rows = target.objects.for_org(org_id).filter(**{target.business_id_field: value})
        if lock and field in model.protected_references:
            rows = rows.select_for_update(no_key=True)
        if not list(rows.values_list("pk", flat=True)[:1]):
            errors.append(f"{camelize(field)}: {target.entity_label} {value!r} does not exist")
    if errors:
        raise ValidationFailed(errors)


# How many referring records a 409 names; the total is always given.
NAMED_REFERRERS = 10


def refuse_if_referenced(instance: OwnedModel) -> None:
    """409 while live records of the organization still point at `instance` through a protected
    reference (an agent's node or instruction, a deployment's model…): deleting it would leave
    them pointing at nothing. Call while holding the instance's row lock."""
    target_label = type(instance)._meta.label
    parts: list[str] = []
    errors: list[str] = []
    for referrer in apps.get_models():
        if not issubclass(referrer, OwnedModel):
            continue
        for field in referrer.protected_references:
            if referrer.references.get(field) != target_label:
                continue
            rows = referrer.objects.for_org(instance.owner_org_id).filter(**{field: instance.business_id})
            ids = list(
                rows.order_by(referrer.business_id_field).values_list(referrer.business_id_field, flat=True)[
                    : NAMED_REFERRERS + 1
                ]
            )
            if not ids:
                continue
            total = len(ids) if len(ids) <= NAMED_REFERRERS else rows.count()
            named = ", ".join(ids[:NAMED_REFERRERS])
            if total > NAMED_REFERRERS:
                named += f" and {total - NAMED_REFERRERS} more"
            parts.append(f"{total} {referrer.entity_label.lower()}(s): {named}")
            errors += [f"{camelize(referrer.business_id_field)}: {i}" for i in ids[:NAMED_REFERRERS]]
    if parts:
        raise ConflictError(
            f"{instance.entity_label} {instance.business_id!r} is used by {' and '.join(parts)}; "
            "reassign or delete them before you delete it",
            errors,
        )


def _check_business_id(model: type[OwnedModel], org_id: str, value: Any) -> None:
    api_name = camelize(model.business_id_field)
    if not isinstance(value, str) or not is_business_id(value):
        raise ValidationFailed(
            [f"{api_name}: must be 1-128 characters of letters, digits and . _ : @ - (starting alphanumeric)"]
        )
    if model.objects.for_org(org_id).filter(**{model.business_id_field: value}).exists():
        raise ConflictError(f"{model.entity_label} with {api_name} {value!r} already exists")


def entity_create(*, model: type[M], data: dict[str, Any], actor: Principal) -> M:
    """Insert one record owned by the actor's organization; 409 when the business id is taken.

    Holds the rows of its protected references (FOR NO KEY UPDATE) until the insert commits.
    """
    _check_business_id(model, actor.org_id, data.get(model.business_id_field))
    data = {**data, **model.derived_fields(data)}
    now = timezone.now()
    instance = model(
        **data,
        owner_org_id=actor.org_id,
        owner_user_id=actor.user_id,
        owner_group_id=actor.group_id,
        created_by=actor.user_id,
        updated_by=actor.user_id,
        created_at=now,
        updated_at=now,
    )
    with transaction.atomic():
        validate_references(model=model, org_id=actor.org_id, data=data, lock=True)
        try:
            with transaction.atomic():
                instance.save(force_insert=True)
        except IntegrityError as exc:
            # Lost a race with a concurrent create of the same business id (the partial unique index).
            api_name = camelize(model.business_id_field)
            raise ConflictError(
                f"{model.entity_label} with {api_name} {instance.business_id!r} already exists"
            ) from exc
    return instance


def entity_update(*, instance: M, data: dict[str, Any], actor: Principal) -> M:
    """Apply the given fields (a partial update) and stamp `updatedBy`/`updatedAt`.

    The business id cannot change: other records refer to it. Holds the rows of changed
    protected references (FOR NO KEY UPDATE) until the update commits.
    """
    model = type(instance)
    if model.business_id_field in data and data[model.business_id_field] != instance.business_id:
        raise ValidationFailed([f"{camelize(model.business_id_field)}: cannot be changed (other records refer to it)"])
    changed_refs = {k: v for k, v in data.items() if k in model.references and v != getattr(instance, k)}
    data = {**data, **model.derived_fields(data)}
    for field, value in data.items():
        setattr(instance, field, value)
    instance.updated_by = actor.user_id
    instance.updated_at = timezone.now()
    with transaction.atomic():
        validate_references(model=model, org_id=actor.org_id, data=changed_refs, lock=True)
        updated = model.objects.filter(pk=instance.pk, is_deleted=False).update(
            **{field: getattr(instance, field) for field in [*data, "updated_by", "updated_at"]}
        )
    if not updated:
        raise NotFoundError(f"{model.entity_label} with ID {instance.pk} not found")
    return instance


def entity_delete(*, instance: M, actor: Principal) -> M:
    """Soft delete; 409 while live records still refer to it (see `refuse_if_referenced`).

    Locks the row (FOR UPDATE) for the check and the delete, so two concurrent deletes cannot
    both succeed and a concurrent create of a referring record cannot slip past the check.
    """
    model = type(instance)
    now = timezone.now()
    with transaction.atomic():
        lock_live(model, instance.pk)
        refuse_if_referenced(instance)
        model.objects.filter(pk=instance.pk).update(
            is_deleted=True, deleted_at=now, updated_by=actor.user_id, updated_at=now
        )
    instance.is_deleted, instance.deleted_at, instance.updated_by = True, now, actor.user_id
    return instance
