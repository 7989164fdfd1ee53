"""The REST contract as reusable test mixins (NetBox's `utilities/testing/api.py`), one per operation.

An entity's test module subclasses `EntityAPIContract` (all of them), sets a few attributes, and
gets create/list/get/update/delete, filters, sort, pagination, soft delete, mass assignment,
references, bad input, the three personas and a query-count check. A resource that offers only
some operations composes the mixins that apply: `SubResourceContract` is the read-only list
under a parent record (`/api/nodes/:id/commands`...), built on `ListContract`.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.support.personas import ORG_A, PersonaClient, Personas

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
ERROR_BODY_KEYS = {"statusCode", "message", "timestamp", "path", "correlationId", "errors"}


def assert_error(response: Any, status: int, path: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])
    body = response.json()
    assert body["statusCode"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert ISO_MS.match(body["timestamp"])
    assert body["correlationId"]
    if path:
        assert body["path"] == path
    return body


# Query parameters every paginated list refuses (400).
BAD_PAGE_PARAMS: list[dict[str, str]] = [{"limit": "101"}, {"limit": "abc"}, {"limit": "0"}, {"page": "-1"}]
# ...and those an entity list refuses besides: unknown or server-only filters and sort keys.
BAD_FILTER_AND_SORT_PARAMS: list[dict[str, str]] = [
    {"filter[noSuchField]": "x"},
    {"filter[_connector]": "OR"},
    {"filter[owner_org_id]": ORG_A},
    {"filter": "x"},
    {"sort": "noSuchField"},
    {"sort": "-owner_org_id"},
]


class ContractBase:
    """What every contract mixin builds on: the URL, a way to make rows, and the records they need."""

    url: ClassVar[str]  # "/api/nodes"
    # Lists are newest first unless said otherwise.
    newest_first: ClassVar[bool] = True
    bad_query_params: ClassVar[list[dict[str, str]]] = BAD_PAGE_PARAMS

    # --- hooks for subclasses ---
    def create(self, client: PersonaClient, n: int = 1, **overrides: Any) -> dict:
        """Make the n-th row of the list in the client's organization; returns it as the API shows it."""
        raise NotImplementedError

    def key(self, row: dict) -> Any:
        """What tells rows apart in a list."""
        return row["_id"]

    def make_references(self, client: PersonaClient) -> None:
        """Create the records the rows refer to, in the client's organization."""

    # --- helpers ---
    def count(self, client: APIClient) -> int:
        return client.get(self.url).json()["pagination"]["total"]

    @pytest.fixture(autouse=True)
    def _refs(self, personas: Personas) -> None:
        self.make_references(personas.owner_a)
        self.make_references(personas.owner_b)


class EntityContractBase(ContractBase):
    """An entity: created by POST to its URL, read and changed at URL/<_id or business id>."""

    label: ClassVar[str]  # "Node"
    business_id: ClassVar[str]  # "nodeId"
    required_fields: ClassVar[list[str]]
    update_body: ClassVar[dict[str, Any]]
    # (filter name, value, body overrides that match, body overrides that do not)
    filter_cases: ClassVar[list[tuple[str, str, dict[str, Any], dict[str, Any]]]] = []
    # (field, a value of the wrong type or outside the enumeration)
    invalid_values: ClassVar[list[tuple[str, Any]]] = []
    # business-id reference fields of this entity (e.g. ["nodeId"]) - each must name a live record
    reference_fields: ClassVar[list[str]] = []
    sort_field: ClassVar[str] = "name"
    bad_query_params = BAD_PAGE_PARAMS + BAD_FILTER_AND_SORT_PARAMS

    def valid_body(self, n: int) -> dict[str, Any]:
        raise NotImplementedError

    def create(self, client: PersonaClient, n: int = 1, **overrides: Any) -> dict:
        response = client.post(self.url, {**self.valid_body(n), **overrides}, format="json")
        assert response.status_code == 201, response.json()
        return response.json()


class ListContract(ContractBase):
    """A paginated list: the envelope, pages, bad query parameters, and no N+1."""

    def test_list_envelope_and_pagination(self, personas: Personas) -> None:
        ids = [self.key(self.create(personas.owner_a, n)) for n in range(1, 4)]
        first = personas.owner_a.get(self.url, {"limit": 2}).json()
        assert first["pagination"] == {"page": 1, "limit": 2, "total": 3}
        second = personas.owner_a.get(self.url, {"limit": 2, "page": 2}).json()
        assert second["pagination"] == {"page": 2, "limit": 2, "total": 3}
        seen = [self.key(row) for row in first["data"] + second["data"]]
        assert sorted(seen) == sorted(ids)
        # Default order is newest first (or oldest first, where the list says so).
        assert seen == (list(reversed(ids)) if self.newest_first else ids)
        beyond = personas.owner_a.get(self.url, {"limit": 2, "page": 5}).json()
        assert beyond["data"] == [] and beyond["pagination"]["total"] == 3

    def test_bad_query_parameters(self, personas: Personas) -> None:
        client = personas.owner_a
        for params in self.bad_query_params:
            assert_error(client.get(self.url, params), 400, self.url)

    def test_list_query_count_does_not_grow_with_rows(self, personas: Personas) -> None:
        def queries_for_list() -> int:
            with CaptureQueriesContext(connection) as ctx:
                assert personas.owner_a.get(self.url, {"limit": 100}).status_code == 200
            return len(ctx.captured_queries)

        self.create(personas.owner_a, 1)
        few = queries_for_list()
        for n in range(2, 8):
            self.create(personas.owner_a, n)
        assert queries_for_list() == few


class SortContract(EntityContractBase):
    def test_sort_ascending_and_descending(self, personas: Personas) -> None:
        for n in (2, 3, 1):
            self.create(personas.owner_a, n)
        asc = [r[self.sort_field] for r in personas.owner_a.get(self.url, {"sort": self.sort_field}).json()["data"]]
        desc = [
            r[self.sort_field] for r in personas.owner_a.get(self.url, {"sort": f"-{self.sort_field}"}).json()["data"]
        ]
        assert asc == sorted(asc) and desc == sorted(desc, reverse=True) and asc != desc


class FilterContract(EntityContractBase):
    def test_filters(self, personas: Personas) -> None:
        for n, (name, value, matching, other) in enumerate(self.filter_cases):
            hit = self.create(personas.owner_a, 100 + 2 * n, **matching)
            self.create(personas.owner_a, 101 + 2 * n, **other)
            response = personas.owner_a.get(self.url, {f"filter[{name}]": value})
            assert response.status_code == 200, response.json()
            found = [row["_id"] for row in response.json()["data"]]
            assert hit["_id"] in found, name
            assert all(self._matches(row, name, value) for row in response.json()["data"]), name

    @staticmethod
    def _matches(row: dict, name: str, value: str) -> bool:
        actual = row.get(name)
        if isinstance(actual, list):
            return value in actual
        if isinstance(actual, bool):
            return str(actual).lower() == value
        return str(actual) == value


class CreateContract(EntityContractBase):
    def test_create_sets_server_fields(self, personas: Personas) -> None:
        body = self.create(personas.owner_a)
        assert OBJECT_ID.match(body["_id"])
        assert body["owner"] == {"orgId": ORG_A, "userId": personas.owner_a.user_id, "groupId": ""}
        assert body["createdBy"] == body["updatedBy"] == personas.owner_a.user_id
        assert ISO_MS.match(body["createdAt"]) and ISO_MS.match(body["updatedAt"])
        for key, value in self.valid_body(1).items():
            assert body[key] == value, key
        assert "isDeleted" not in body and "owner_org_id" not in body

    def test_duplicate_business_id_is_409(self, personas: Personas) -> None:
        self.create(personas.owner_a)
        response = personas.owner_a.post(self.url, self.valid_body(1), format="json")
        assert_error(response, 409, self.url)
        assert self.count(personas.owner_a) == 1
        # Another organization may use the same business id.
        self.create(personas.owner_b)


class RetrieveContract(EntityContractBase):
    def test_get_by_object_id_and_business_id(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        by_id = personas.owner_a.get(f"{self.url}/{created['_id']}")
        by_business = personas.owner_a.get(f"{self.url}/{created[self.business_id]}")
        assert by_id.status_code == by_business.status_code == 200
        assert by_id.json() == by_business.json() == created

    def test_malformed_and_unknown_ids(self, personas: Personas) -> None:
        client = personas.owner_a
        assert_error(client.get(f"{self.url}/{'x' * 300}"), 400)
        assert_error(client.get(f"{self.url}/bad%20id"), 400)
        body = assert_error(client.get(f"{self.url}/999999999999999999999999"), 404)
        assert body["message"] == f"{self.label} with ID 999999999999999999999999 not found"


class UpdateContract(EntityContractBase):
    def test_update_is_partial_and_audited(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        response = personas.editor_a.put(f"{self.url}/{created['_id']}", self.update_body, format="json")
        assert response.status_code == 200, response.json()
        body = response.json()
        for key, value in self.update_body.items():
            assert body[key] == value, key
        assert body["updatedBy"] == personas.editor_a.user_id
        assert body["createdBy"] == personas.owner_a.user_id
        assert body[self.business_id] == created[self.business_id]
        assert personas.owner_a.get(f"{self.url}/{created['_id']}").json() == body

    def test_business_id_cannot_be_changed(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        url = f"{self.url}/{created['_id']}"
        body = assert_error(personas.owner_a.put(url, {self.business_id: "renamed-id"}, format="json"), 400)
        assert any(line.startswith(self.business_id) for line in body["errors"]), body
        assert personas.owner_a.get(url).json() == created


def changed_json_value(value: Any) -> Any:
    """Another JSON value of the same kind (a time string becomes another time)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return "2001-02-03T04:05:06.000Z" if ISO_MS.match(value) else f"{value}x"
    if isinstance(value, list):
        return [] if value else ["x"]
    if isinstance(value, dict):
        return {} if value else {"x": 1}
    return "x"


class RoundTripContract(EntityContractBase):
    """A record read can be PUT back whole with one field changed. Each field of it is then either
    applied (writable), a 400 naming it (server-owned, different from what the server holds), or
    listed here as ignored: nothing a client sends is silently dropped."""

    # Server-owned values that move on their own, and populated copies of other records.
    ignored_on_write: ClassVar[set[str]] = {"updatedAt"}

    def test_a_record_read_can_be_sent_back_with_one_change(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        url = f"{self.url}/{created['_id']}"
        read = personas.owner_a.get(url).json()
        response = personas.owner_a.put(url, {**read, **self.update_body}, format="json")
        assert response.status_code == 200, response.json()
        for key, value in self.update_body.items():
            assert response.json()[key] == value, key
        # Unknown fields are ignored, as before.
        assert personas.owner_a.put(url, {**response.json(), "noSuchField": 1}, format="json").status_code == 200

    def test_every_field_sent_back_changed_is_applied_or_refused(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        url = f"{self.url}/{created['_id']}"
        for field in created:
            if field == self.business_id:
                continue  # test_business_id_cannot_be_changed
            before = personas.owner_a.get(url).json()
            sent = {**before, field: changed_json_value(before[field])}
            response = personas.owner_a.put(url, sent, format="json")
            after = personas.owner_a.get(url).json()
            if response.status_code == 400:
                errors = response.json()["errors"]
                assert any(line.startswith(field) for line in errors), (field, errors)
                assert {k: v for k, v in after.items() if k != "updatedAt"} == {
                    k: v for k, v in before.items() if k != "updatedAt"
                }, field
            else:
                assert response.status_code == 200, (field, response.json())
                if field in self.ignored_on_write:
                    assert after[field] == before[field] or field == "updatedAt", field
                else:
                    assert after[field] != before[field], f"{field} was silently ignored"


class DeleteContract(EntityContractBase):
    def test_soft_delete_hides_record_and_frees_business_id(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        response = personas.owner_a.delete(f"{self.url}/{created['_id']}")
        assert response.status_code == 200
        assert response.json()["message"] == f"{self.label} deleted successfully"
        assert ISO_MS.match(response.json()["deletedAt"])
        assert_error(personas.owner_a.get(f"{self.url}/{created['_id']}"), 404)
        assert_error(personas.owner_a.delete(f"{self.url}/{created['_id']}"), 404)
        assert self.count(personas.owner_a) == 0
        with connection.cursor() as cursor:
            table = self._table()
            cursor.execute(f'SELECT is_deleted, deleted_at FROM "{table}" WHERE "_id" = %s', [created["_id"]])
            is_deleted, deleted_at = cursor.fetchone()
        assert is_deleted and deleted_at is not None
        # The business id may be reused once the old record is deleted.
        self.create(personas.owner_a)

    def _table(self) -> str:
        from django.apps import apps

        for model in apps.get_models():
            if getattr(model, "entity_label", None) == self.label:
                return model._meta.db_table
        raise AssertionError(self.label)


class PersonaContract(EntityContractBase):
    """What each role may do: the viewer reads, the editor writes but does not delete, no token is 401."""

    def test_viewer_reads_but_cannot_write(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        assert personas.viewer_a.get(f"{self.url}/{created['_id']}").status_code == 200
        assert personas.viewer_a.get(self.url).json()["pagination"]["total"] == 1
        body = assert_error(personas.viewer_a.post(self.url, self.valid_body(2), format="json"), 403)
        assert body["message"] == "You do not have permission to create"
        body = assert_error(personas.viewer_a.put(f"{self.url}/{created['_id']}", self.update_body, format="json"), 403)
        assert body["message"] == "You do not have permission to update"
        body = assert_error(personas.viewer_a.delete(f"{self.url}/{created['_id']}"), 403)
        assert body["message"] == "You do not have permission to delete"
        assert self.count(personas.owner_a) == 1
        assert personas.owner_a.get(f"{self.url}/{created['_id']}").json() == created

    def test_editor_cannot_delete(self, personas: Personas) -> None:
        created = self.create(personas.editor_a)
        body = assert_error(personas.editor_a.delete(f"{self.url}/{created['_id']}"), 403)
        assert body["message"] == "You do not have permission to delete"

    def test_no_token_is_401(self, personas: Personas) -> None:
        body = assert_error(personas.anonymous.get(self.url), 401, self.url)
        assert body["message"] == "Unauthorized"
        assert_error(personas.anonymous.post(self.url, self.valid_body(1), format="json"), 401)
        bad = APIClient()
        bad.credentials(HTTP_AUTHORIZATION="Bearer not-a-jwt")
        assert_error(bad.get(self.url), 401)


class TenancyContract(EntityContractBase):
    def test_other_organization_sees_nothing(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        assert personas.owner_b.get(self.url).json()["pagination"]["total"] == 0
        for identifier in (created["_id"], created[self.business_id]):
            assert_error(personas.owner_b.get(f"{self.url}/{identifier}"), 404)
            assert_error(personas.owner_b.put(f"{self.url}/{identifier}", self.update_body, format="json"), 404)
            assert_error(personas.owner_b.delete(f"{self.url}/{identifier}"), 404)
        assert personas.owner_a.get(f"{self.url}/{created['_id']}").json() == created


class BadInputContract(EntityContractBase):
    """Bad bodies: each a 4xx with the error body, and nothing changes."""

    def test_missing_required_fields(self, personas: Personas) -> None:
        body = assert_error(personas.owner_a.post(self.url, {}, format="json"), 400, self.url)
        assert body["message"] == "Validation failed"
        for field in self.required_fields:
            assert any(line.startswith(field) for line in body["errors"]), (field, body["errors"])
        assert self.count(personas.owner_a) == 0

    def test_invalid_values(self, personas: Personas) -> None:
        for field, value in self.invalid_values:
            response = personas.owner_a.post(self.url, {**self.valid_body(1), field: value}, format="json")
            body = assert_error(response, 400)
            assert any(line.startswith(field) for line in body["errors"]), (field, body)
        assert self.count(personas.owner_a) == 0

    def test_unknown_references_are_400(self, personas: Personas) -> None:
        for field in self.reference_fields:
            response = personas.owner_a.post(self.url, {**self.valid_body(1), field: "no-such-record"}, format="json")
            body = assert_error(response, 400)
            assert any(field in line for line in body["errors"]), body
        assert self.count(personas.owner_a) == 0

    def test_server_fields_cannot_be_assigned(self, personas: Personas) -> None:
        forged = {
            "_id": "0123456789abcdef01234567",
            "owner": {"orgId": "someone-else", "userId": "x", "groupId": "y"},
            "createdBy": "mallory",
            "updatedBy": "mallory",
            "isDeleted": True,
            "deletedAt": "2020-01-01T00:00:00.000Z",
        }
        for key, value in forged.items():
            body = assert_error(personas.owner_a.post(self.url, {**self.valid_body(1), key: value}, format="json"), 400)
            assert any(line.startswith(key) for line in body["errors"]), body
        assert self.count(personas.owner_a) == 0
        created = self.create(personas.owner_a)
        for key, value in forged.items():
            assert_error(personas.owner_a.put(f"{self.url}/{created['_id']}", {key: value}, format="json"), 400)
        assert personas.owner_a.get(f"{self.url}/{created['_id']}").json() == created

    def test_malformed_requests(self, personas: Personas) -> None:
        client = personas.owner_a
        assert_error(client.generic("POST", self.url, "{not json", content_type="application/json"), 400)
        assert_error(client.generic("POST", self.url, '{"a": NaN}', content_type="application/json"), 400)
        assert_error(client.generic("POST", self.url, "[1, 2]", content_type="application/json"), 400)
        deep = "[" * 5000 + "]" * 5000
        assert_error(client.generic("POST", self.url, deep, content_type="application/json"), 400)
        huge = json.dumps({**self.valid_body(1), "name": "x" * (1024 * 1024 + 10)})
        assert_error(client.generic("POST", self.url, huge, content_type="application/json"), 413)
        assert self.count(client) == 0


class EntityAPIContract(
    CreateContract,
    RetrieveContract,
    ListContract,
    SortContract,
    FilterContract,
    UpdateContract,
    RoundTripContract,
    DeleteContract,
    PersonaContract,
    TenancyContract,
    BadInputContract,
):
    """The whole contract of an entity's CRUD API."""


class SubResourceContract(ListContract):
    """A read-only list under a parent record, e.g. GET /api/nodes/:id/commands.

    The parent is named by its business id (`parent_id`): `make_references` creates it in both
    organizations, so org B has a parent of the same name whose list must never show org A's rows,
    while A's parent named by `_id` is a 404 for B. `bad_filter_params` are the list's own bad
    query parameters (each a 400 with the whole error body).
    """

    parent_collection: ClassVar[str]  # "/api/nodes"
    parent_id: ClassVar[str]  # "node-gpu-01"
    sub_path: ClassVar[str]  # "commands"
    # (query parameters, the parameter the error names)
    bad_filter_params: ClassVar[list[tuple[dict[str, str], str]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "sub_path" in cls.__dict__:
            cls.url = f"{cls.parent_collection}/{cls.parent_id}/{cls.sub_path}"

    def url_by_pk(self, client: APIClient) -> str:
        """The list's URL naming the client's parent by `_id`."""
        parent = client.get(f"{self.parent_collection}/{self.parent_id}").json()
        return f"{self.parent_collection}/{parent['_id']}/{self.sub_path}"

    def test_owner_and_viewer_of_the_organization_see_the_rows(self, personas: Personas) -> None:
        keys = [self.key(self.create(personas.owner_a, n)) for n in (1, 2)]
        by_pk = self.url_by_pk(personas.owner_a)
        for client in (personas.owner_a, personas.viewer_a):
            for url in (self.url, by_pk):
                response = client.get(url)
                assert response.status_code == 200, response.json()
                body = response.json()
                assert set(body) == {"data", "pagination"}
                assert body["pagination"] == {"page": 1, "limit": 10, "total": 2}
                assert sorted(self.key(row) for row in body["data"]) == sorted(keys)

    def test_another_organization_gets_404_and_never_sees_the_rows(self, personas: Personas) -> None:
        mine = [self.key(self.create(personas.owner_a, n)) for n in (1, 2)]
        theirs = self.key(self.create(personas.owner_b, 3))
        a_by_pk = self.url_by_pk(personas.owner_a)
        body = assert_error(personas.owner_b.get(a_by_pk), 404, a_by_pk)
        assert set(body) == ERROR_BODY_KEYS - {"errors"}, body
        # The same business id names B's own parent: each organization sees its own rows only.
        assert [self.key(row) for row in personas.owner_b.get(self.url).json()["data"]] == [theirs]
        assert sorted(self.key(row) for row in personas.owner_a.get(self.url).json()["data"]) == sorted(mine)

    def test_no_token_is_401(self, personas: Personas) -> None:
        body = assert_error(personas.anonymous.get(self.url), 401, self.url)
        assert body["message"] == "Unauthorized"
        bad = APIClient()
        bad.credentials(HTTP_AUTHORIZATION="Bearer not-a-jwt")
        assert_error(bad.get(self.url), 401, self.url)

    def test_bad_filter_values_are_400_with_the_error_body(self, personas: Personas) -> None:
        assert self.bad_filter_params, "a sub-resource list names its own bad query parameters"
        self.create(personas.owner_a, 1)
        for params, name in self.bad_filter_params:
            body = assert_error(personas.viewer_a.get(self.url, params), 400, self.url)
            assert set(body) == ERROR_BODY_KEYS, body
            assert body["message"] == "Validation failed", body
            assert [line.split(":")[0] for line in body["errors"]] == [name], (params, body)
