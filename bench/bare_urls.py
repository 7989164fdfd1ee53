"""The baseline of bench/node_list.py: `GET /api/nodes` as a bare Django view.

It does what the service's list does for `limit=10&sort=-createdAt&filter[status]=...` and nothing
more: verify the bearer token (the same `decode_token`), run the same two SQL statements through a
raw cursor, and write the same JSON envelope with `json.dumps`. No DRF, no ORM, no serializer at
request time (the column-to-JSON mapping is computed once, at import). The SQL text is the one
Django generates for the service (the benchmark checks that the two are identical).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.db import connection, models
from django.http import HttpRequest, HttpResponse
from django.urls import path

from aiwm_project.api.serializers import OwnerField
from aiwm_project.auth import TokenError, authenticate_user_token, bearer_token
from aiwm_project.datetimes import format_datetime
from nodes.models import Node
from nodes.serializers import NodeSerializer

# The columns Django selects for a Node (every concrete field, in model order), and how each JSON
# field of NodeSerializer is read from them. Both are derived once, at import, from the model and the
# serializer, so the baseline follows the Node schema as it evolves; a serializer field that is not a
# plain column (a computed or populated field) fails here loudly rather than being guessed.
_FIELDS = Node._meta.concrete_fields
COLUMNS = tuple(f.column for f in _FIELDS)
_POSITION = {f.attname: i for i, f in enumerate(_FIELDS)}
_T = '"nodes_node"'
# In the service's order: `for_org` (organization, then live rows), then the status filter.
WHERE = f'({_T}."owner_org_id" = %s AND NOT {_T}."is_deleted" AND {_T}."status" = %s)'
PAGE_SQL = (
    "SELECT "
    + ", ".join(f'{_T}."{c}"' for c in COLUMNS)
    + f" FROM {_T} WHERE {WHERE}"
    + f' ORDER BY {_T}."created_at" DESC, {_T}."_id" DESC LIMIT %s'
)
COUNT_SQL = f'SELECT COUNT(*) AS "__count" FROM {_T} WHERE {WHERE}'


def _iso(value: Any) -> str | None:
    return None if value is None else format_datetime(value)


def _json(value: Any) -> Any:
    # Django's psycopg setup hands jsonb to Python as text (JSONField decodes it); do the same.
    return json.loads(value) if isinstance(value, str) else value


def _reader(api_name: str, field: Any) -> Callable[[tuple[Any, ...]], Any]:
    if isinstance(field, OwnerField):
        org, user, group = (_POSITION[name] for name in ("owner_org_id", "owner_user_id", "owner_group_id"))
        return lambda r: {"orgId": r[org], "userId": r[user], "groupId": r[group]}
    if field.source == "*" or "." in field.source:
        raise NotImplementedError(f"bench bare view: {api_name} is not a plain column; teach bench/bare_urls.py")
    model_field = Node._meta.get_field(field.source)
    i = _POSITION[model_field.attname]  # type: ignore[union-attr]
    if isinstance(model_field, models.DateTimeField):
        return lambda r: _iso(r[i])
    if isinstance(model_field, models.JSONField):
        return lambda r: _json(r[i])
    plain = models.CharField | models.TextField | models.BooleanField | models.FloatField | models.IntegerField
    if isinstance(model_field, plain):
        return lambda r: r[i]
    raise NotImplementedError(f"bench bare view: no conversion for {api_name} ({type(model_field).__name__})")


_READERS = [(name, _reader(name, field)) for name, field in NodeSerializer().fields.items() if not field.write_only]


def row_json(r: tuple[Any, ...]) -> dict[str, Any]:
    return {name: read(r) for name, read in _READERS}


def _response(body: dict[str, Any], status: int = 200) -> HttpResponse:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return HttpResponse(content.encode(), status=status, content_type="application/json")


def node_list(request: HttpRequest) -> HttpResponse:
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        return _response({"statusCode": 401, "message": "Authentication credentials were not provided."}, 401)
    try:
        org_id = authenticate_user_token(token).org_id
    except TokenError as exc:
        return _response({"statusCode": 401, "message": str(exc)}, 401)
    status = request.GET.get("filter[status]", "online")
    limit = int(request.GET.get("limit", "10"))
    with connection.cursor() as cursor:
        cursor.execute(PAGE_SQL, [org_id, status, limit])
        rows = cursor.fetchall()
        # Same rule as the service's pagination: a short first page already tells the total.
        if len(rows) < limit:
            total = len(rows)
        else:
            cursor.execute(COUNT_SQL, [org_id, status])
            total = cursor.fetchone()[0]
    return _response({"data": [row_json(r) for r in rows], "pagination": {"page": 1, "limit": limit, "total": total}})


urlpatterns = [path("api/nodes", node_list)]
