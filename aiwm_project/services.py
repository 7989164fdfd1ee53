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

M = TypeVar("M", bound=OwnedModel)


def _api_name(field: str) -> str:
    from aiwm_project.api.serializers import camelize

    return camelize(field)


def validate_references(*, model: type[OwnedModel], org_id: str, data: dict[str, Any]) -> None:
    """Every business-id reference in `data` must name a live record of the same organization."""
    errors = []
    for field, target_label in model.references.items():
        value = data.get(field)
        if value in (None, ""):
            continue
        target: type[OwnedModel] = apps.get_model(target_label)  # type: ignore[assignment]
        exists = target.objects.for_org(org_id).filter(**{target.business_id_field: value}).exists()
        if not exists:
            errors.append(f"{_api_name(field)}: {target.entity_label} {value!r} does not exist")
    if errors:
        raise ValidationFailed(errors)


def _check_business_id(model: type[OwnedModel], org_id: str, value: Any, exclude_pk: str | None) -> None:
    api_name = _api_name(model.business_id_field)
    if not isinstance(value, str) or not is_business_id(value):
        raise ValidationFailed(
            [f"{api_name}: must be 1-128 characters of letters, digits and . _ : @ - (starting alphanumeric)"]
        )
    taken = model.objects.for_org(org_id).filter(**{model.business_id_field: value})
    if exclude_pk:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise ConflictError(f"{model.entity_label} with {api_name} {value!r} already exists")


def entity_create(*, model: type[M], data: dict[str, Any], actor: Principal) -> M:
    """Insert one record owned by the actor's organization; 409 when the business id is taken."""
    _check_business_id(model, actor.org_id, data.get(model.business_id_field), None)
    validate_references(model=model, org_id=actor.org_id, data=data)
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
    try:
        with transaction.atomic():
            instance.save(force_insert=True)
    except IntegrityError as exc:
        # Lost a race with a concurrent create of the same business id (the partial unique index).
        api_name = _api_name(model.business_id_field)
        raise ConflictError(f"{model.entity_label} with {api_name} {instance.business_id!r} already exists") from exc
    return instance


def entity_update(*, instance: M, data: dict[str, Any], actor: Principal) -> M:
    """Apply the given fields (a partial update) and stamp `updatedBy`/`updatedAt`."""
    model = type(instance)
    if model.business_id_field in data and data[model.business_id_field] != instance.business_id:
        _check_business_id(model, actor.org_id, data[model.business_id_field], instance.pk)
    changed_refs = {k: v for k, v in data.items() if k in model.references and v != getattr(instance, k)}
    validate_references(model=model, org_id=actor.org_id, data=changed_refs)
    for field, value in data.items():
        setattr(instance, field, value)
    instance.updated_by = actor.user_id
    instance.updated_at = timezone.now()
    try:
        with transaction.atomic():
            updated = model.objects.filter(pk=instance.pk, is_deleted=False).update(
                **{field: getattr(instance, field) for field in [*data, "updated_by", "updated_at"]}
            )
    except IntegrityError as exc:
        raise ConflictError(f"{model.entity_label} {instance.business_id!r} conflicts with another") from exc
    if not updated:
        raise NotFoundError(f"{model.entity_label} with ID {instance.pk} not found")
    return instance


def entity_delete(*, instance: OwnedModel, actor: Principal) -> OwnedModel:
    """Soft delete with a compare-and-swap, so two concurrent deletes cannot both succeed."""
    model = type(instance)
    now = timezone.now()
    deleted = model.objects.filter(pk=instance.pk, is_deleted=False).update(
        is_deleted=True, deleted_at=now, updated_by=actor.user_id, updated_at=now
    )
    if not deleted:
        raise NotFoundError(f"{model.entity_label} with ID {instance.pk} not found")
    instance.is_deleted, instance.deleted_at, instance.updated_by = True, now, actor.user_id
    return instance
