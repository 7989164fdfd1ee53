"""The base every entity builds on (owned, audited, soft-deletable, ObjectId keyed) and local IAM users."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Lookup, Q
from django.utils import timezone

from aiwm_project.ids import new_object_id


class TenantQuerySet(models.QuerySet):
    def for_org(self, org_id: str | None) -> TenantQuerySet:
        """Rows of one organization. No organization means no rows (fail closed), never all rows."""
        if not org_id:
            return self.none()
        return self.filter(owner_org_id=org_id)


class TenantModel(models.Model):
    """A row that belongs to one organization (`owner_org_id`): read it through `for_org`.

    The base of the entities (OwnedModel) and of the records that hang off them without an
    identity of their own: the command outbox, metric points, log lines, the message ledger.
    """

    owner_org_id = models.CharField(max_length=64)

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True


class OwnedQuerySet(TenantQuerySet):
    def live(self) -> OwnedQuerySet:
        return self.filter(is_deleted=False)

    def for_org(self, org_id: str | None) -> OwnedQuerySet:
        """Live rows of one organization. No organization means no rows (fail closed), never all rows."""
        return super().for_org(org_id).filter(is_deleted=False)  # type: ignore[return-value]


class OwnedModel(TenantModel):
    """Owned by an organization, audited, soft-deleted, keyed by a 24-hex `_id`.

    Subclasses name their business id field (`business_id_field`), the label used in messages
    (`entity_label`) and the business-id references they hold (`references`, field -> model label),
    which the shared services validate on every write; `protected_references` are those whose
    target may not be deleted while this record is live (deleting it is a 409 naming this record).
    """

    id = models.CharField(primary_key=True, max_length=24, default=new_object_id, editable=False, db_column="_id")
    owner_user_id = models.CharField(max_length=64, blank=True, default="")
    owner_group_id = models.CharField(max_length=64, blank=True, default="")
    created_by = models.CharField(max_length=64, blank=True, default="")
    updated_by = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    is_deleted = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(null=True, blank=True)

    # Narrows TenantModel's manager: for_org() also drops soft-deleted rows.
    objects = OwnedQuerySet.as_manager()  # type: ignore[misc]

    business_id_field: ClassVar[str]
    entity_label: ClassVar[str]
    references: ClassVar[dict[str, str]] = {}
    # References whose target cannot be deleted while this live record points at it.
    protected_references: ClassVar[frozenset[str]] = frozenset()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.entity_label} {self.business_id}"

    @property
    def business_id(self) -> str:
        return getattr(self, self.business_id_field)

    @classmethod
    def derived_fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The stored fields a write of `data` (model field names) computes from it: every service
        that writes such a field adds these (entity_create/update, a node's telemetry). None here."""
        return {}


def tenant_constraints(prefix: str, business_field: str) -> list[models.BaseConstraint]:
    """Business ids are unique among one organization's live rows (a deleted id may be reused)."""
    return [
        models.UniqueConstraint(
            fields=["owner_org_id", business_field],
            condition=Q(is_deleted=False),
            name=f"{prefix}_bizid_live_uniq",
        )
    ]


def tenant_indexes(prefix: str, *leading: str) -> list[models.Index]:
    """Organization-led partial indexes on live rows: what every list query and its COUNT(*) use.

    The default index serves `sort=-createdAt` (and, without the organization, the admin's lists);
    each extra field gets an (org, field, created_at) index so `filter[field]=...&sort=-createdAt`
    and its total are answered from the index alone.
    """
    indexes = [
        models.Index(
            fields=["owner_org_id", "created_at", "id"],
            condition=Q(is_deleted=False),
            name=f"{prefix}_org_created_live",
        ),
        # The admin's lists are installation-wide (every organization), newest first: without this
        # each page sorted every live row of the table (1,000 nodes: 1.4 ms; a million executions…).
        models.Index(fields=["created_at", "id"], condition=Q(is_deleted=False), name=f"{prefix}_created_live"),
    ]
    for field in leading:
        indexes.append(
            models.Index(
                fields=["owner_org_id", field, "created_at", "id"],
                condition=Q(is_deleted=False),
                name=f"{prefix}_org_{field[:8]}_live",
            )
        )
    return indexes


@models.JSONField.register_lookup
class HasItem(Lookup):
    """`tags__has_item="x"`: the JSON array contains x (membership filter on array fields)."""

    lookup_name = "has_item"
    prepare_rhs = False

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return (
            f"EXISTS (SELECT 1 FROM json_each({lhs}) WHERE json_each.value = %s)",
            [*lhs_params, self.rhs],
        )

    def as_postgresql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} @> %s::jsonb", [*lhs_params, json.dumps([self.rhs])]


class LocalIdentity(models.Model):
    """IAM attributes of a local user, for the embedded default's `POST /auth/login`."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="iam")
    iam_user_id = models.CharField(max_length=24, unique=True, default=new_object_id)
    org_id = models.CharField(max_length=64)
    group_id = models.CharField(max_length=64, blank=True, default="")
    roles = models.JSONField(default=list)

    class Meta:
        verbose_name = "local IAM identity"
        verbose_name_plural = "local IAM identities"

    def __str__(self) -> str:
        return f"{self.user.get_username()} ({self.org_id})"
