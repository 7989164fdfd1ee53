"""Shared reads: find a record by `_id` or business id, batch-load referenced records, count by status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.apps import apps
from django.db.models import Count, Q, QuerySet

from aiwm_project.ids import is_business_id, is_object_id
from aiwm_project.models import OwnedModel


def find_by_identifier(queryset: QuerySet, identifier: str) -> Any | None:
    """`_id` or business id, within an already-scoped queryset. An `_id` match wins over a business id."""
    model = queryset.model
    condition = Q(**{model.business_id_field: identifier})
    if is_object_id(identifier):
        condition |= Q(pk=identifier)
    matches = list(queryset.filter(condition)[:2])
    for match in matches:
        if match.pk == identifier:
            return match
    return matches[0] if matches else None


def in_time_range(queryset: QuerySet, field: str, start: datetime | None, end: datetime | None) -> QuerySet:
    """Rows whose `field` is in [start, end]; an end that is None is open."""
    if start:
        queryset = queryset.filter(**{f"{field}__gte": start})
    if end:
        queryset = queryset.filter(**{f"{field}__lte": end})
    return queryset


def is_valid_identifier(identifier: str) -> bool:
    return is_object_id(identifier) or is_business_id(identifier)


class RelatedLoader:
    """Loads referenced records by business id for one organization, one query per model per batch.

    List views prime it with every id on the page, so serializers never query per row.
    """

    def __init__(self, org_id: str):
        self.org_id = org_id
        self._cache: dict[tuple[str, str], Any] = {}

    def prime(self, model_label: str, ids: set[str]) -> None:
        model: type[OwnedModel] = apps.get_model(model_label)  # type: ignore[assignment]
        missing = {i for i in ids if i and (model_label, i) not in self._cache}
        if not missing:
            return
        for i in missing:
            self._cache[(model_label, i)] = None
        field = model.business_id_field
        for row in model.objects.for_org(self.org_id).filter(**{f"{field}__in": missing}):
            self._cache[(model_label, getattr(row, field))] = row

    def get(self, model_label: str, business_id: str) -> Any | None:
        if not business_id:
            return None
        if (model_label, business_id) not in self._cache:
            self.prime(model_label, {business_id})
        return self._cache[(model_label, business_id)]


def counts_by_status(queryset: QuerySet, statuses: list[str]) -> dict[str, int]:
    """How many rows are in each status, every status listed (zero included), in one GROUP BY."""
    counts = dict.fromkeys(statuses, 0)
    for row in queryset.values("status").annotate(n=Count("pk")).order_by():
        counts[row["status"]] = row["n"]
    return counts
