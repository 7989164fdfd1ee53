"""The Tools REST contract (/api/tools), plus the documented shapes of its JSON fields."""

from __future__ import annotations

from typing import Any

from tests.support.api import EntityAPIContract, assert_error
from tests.support.personas import Personas

PARAMETERS = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "default": 5}},
    "required": ["query"],
}
RESPONSE_FORMAT = {"type": "array", "schema": {"items": {"type": "object"}}}
USAGE_ENTRY = {
    "timestamp": "2025-11-20T09:00:00.000Z",
    "agentId": "agent-assistant-01",
    "arguments": {"query": "RTX 4090"},
    "result": [{"title": "GeForce RTX 4090"}],
    "latency": 420,
    "success": True,
}
EXAMPLE = {
    "title": "Search for GPUs",
    "description": "A plain query",
    "arguments": {"query": "RTX 4090", "limit": 1},
    "expectedOutput": [{"title": "GeForce RTX 4090"}],
}


class TestToolsAPI(EntityAPIContract):
    url = "/api/tools"
    label = "Tool"
    business_id = "toolId"
    required_fields = ["toolId", "name", "type"]
    update_body = {"status": "deprecated", "isActive": False, "category": "web-search"}
    filter_cases = [
        ("type", "function", {"type": "function"}, {"type": "api"}),
        ("category", "database", {"category": "database"}, {"category": "search"}),
        ("provider", "openai", {"provider": "openai"}, {"provider": "google"}),
        ("status", "deprecated", {"status": "deprecated"}, {"status": "active"}),
        ("isActive", "false", {"isActive": False}, {"isActive": True}),
        ("tags", "web", {"tags": ["search", "web"]}, {"tags": ["search"]}),
    ]
    invalid_values = [
        ("type", "plugin"),
        ("status", "retired"),
        ("parameters", "query: string"),
        ("parameters", {"type": "string", "properties": {}, "required": []}),
        ("parameters", {"type": "object", "properties": [], "required": []}),
        ("parameters", {"type": "object", "properties": {}, "required": "query"}),
        ("parameters", {"type": "object", "properties": {}, "required": ["query"]}),
        ("responseFormat", {"type": "date", "schema": {}}),
        ("responseFormat", {"schema": {}}),
        ("usage", {"agentId": "a"}),
        ("usage", [{**USAGE_ENTRY, "timestamp": "not a date"}]),
        ("usage", [{**USAGE_ENTRY, "latency": -1}]),
        ("usage", [{k: v for k, v in USAGE_ENTRY.items() if k != "success"}]),
        ("examples", [{"description": "no title"}]),
        ("examples", [{**EXAMPLE, "arguments": ["not", "a", "record"]}]),
        ("totalUsage", -1),
        ("averageLatency", -1),
        ("tags", "search"),
        ("name", ""),
        ("toolId", "has spaces"),
    ]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "toolId": f"tool-web-search-{n}",
            "name": f"Web Search {n}",
            "description": "Searches the web",
            "type": "api",
            "category": "search",
            "provider": "google",
            "endpoint": "https://tools.example.com/search",
            "version": "1.0.0",
            "status": "active",
            "parameters": PARAMETERS,
            "responseFormat": RESPONSE_FORMAT,
            "usage": [USAGE_ENTRY],
            "totalUsage": 1,
            "totalFailures": 0,
            "averageLatency": 420,
            "tags": ["search"],
            "documentation": "Returns at most `limit` results.",
            "examples": [EXAMPLE],
            "isActive": True,
        }

    # --- tool specifics ---
    def test_defaults_describe_a_tool_without_arguments(self, personas: Personas) -> None:
        response = personas.owner_a.post(self.url, {"toolId": "t-1", "name": "T", "type": "function"}, format="json")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["parameters"] == {"type": "object", "properties": {}, "required": []}
        assert body["responseFormat"] == {"type": "object", "schema": {}}
        assert body["usage"] == [] and body["examples"] == [] and body["tags"] == []
        assert body["totalUsage"] == body["totalFailures"] == body["averageLatency"] == 0
        assert body["status"] == "active" and body["isActive"] is True
        assert body["category"] == body["provider"] == body["endpoint"] == body["documentation"] == ""

    def test_shapes_are_completed_with_their_defaults_and_stripped_of_unknown_keys(self, personas: Personas) -> None:
        body = self.create(
            personas.owner_a,
            parameters={"type": "array", "x-extra": True},
            responseFormat={"type": "string"},
            usage=[{"timestamp": "2025-11-20T11:00:00+02:00", "agentId": "a-1", "success": False, "error": "timeout"}],
            examples=[{"title": "Bare", "note": "dropped"}],
        )
        assert body["parameters"] == {"type": "array", "properties": {}, "required": []}
        assert body["responseFormat"] == {"type": "string", "schema": {}}
        assert body["usage"] == [
            {
                "timestamp": "2025-11-20T09:00:00.000Z",
                "agentId": "a-1",
                "arguments": {},
                "result": None,
                "latency": 0,
                "success": False,
                "error": "timeout",
            }
        ]
        assert body["examples"] == [{"title": "Bare", "description": "", "arguments": {}, "expectedOutput": None}]

    def test_shape_errors_name_the_path(self, personas: Personas) -> None:
        bad = {
            **self.valid_body(1),
            "parameters": {"type": "object", "properties": {"q": {}}, "required": ["q", "limit"]},
            "usage": [USAGE_ENTRY, {**USAGE_ENTRY, "agentId": ""}],
            "responseFormat": {"type": "xml"},
        }
        body = assert_error(personas.owner_a.post(self.url, bad, format="json"), 400, self.url)
        assert "parameters.required: names properties that are not defined: limit" in body["errors"]
        assert "usage[1].agentId may not be blank." in body["errors"]
        assert 'responseFormat.type: "xml" is not one of: object, array, string, number, boolean' in body["errors"]

    def test_put_replaces_a_json_field_whole_and_validates_it_whole(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        url = f"{self.url}/{created['_id']}"
        # PUT is partial for the entity, never for a JSON field: a shape missing its `type` is a 400.
        for field, value in (
            ("parameters", {"properties": {}}),
            ("responseFormat", {"schema": {}}),
            ("usage", [{"agentId": "a-1"}]),
            ("examples", [{"description": "no title"}]),
        ):
            body = assert_error(personas.owner_a.put(url, {field: value}, format="json"), 400)
            assert any(line.startswith(field) for line in body["errors"]), body
        assert personas.owner_a.get(url).json() == created
        new_parameters = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
        response = personas.owner_a.put(url, {"parameters": new_parameters}, format="json")
        assert response.status_code == 200 and response.json()["parameters"] == new_parameters

    def test_usage_and_examples_are_bounded(self, personas: Personas) -> None:
        body = assert_error(
            personas.owner_a.post(self.url, {**self.valid_body(1), "usage": [USAGE_ENTRY] * 1001}, format="json"), 400
        )
        assert body["errors"] == ["usage: Ensure this field has no more than 1000 elements."]
        assert_error(
            personas.owner_a.post(self.url, {**self.valid_body(1), "examples": [EXAMPLE] * 101}, format="json"), 400
        )
        assert_error(personas.owner_a.post(self.url, {**self.valid_body(1), "examples": "none"}, format="json"), 400)
        assert self.count(personas.owner_a) == 0
