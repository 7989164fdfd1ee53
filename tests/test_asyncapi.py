"""The node protocol's AsyncAPI 3 document (docs/asyncapi.yaml): valid against the AsyncAPI
specification's own JSON Schema (npm `@asyncapi/specs`), served next to Swagger and linked from
it, and complete: every event both ways and every error code the gateway sends."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from django.test import Client
from jsonschema import Draft7Validator

from deployments.choices import LogLevel
from deployments.services import NODE_STATUS
from gateway import protocol
from nodes.choices import CommandType
from tests.support.environment import IN_CI, ROOT

DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
SPEC = ROOT / "tests" / "ts_client" / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    if not SPEC.exists():
        problem = "@asyncapi/specs is not installed: run `make node-deps`"
        if IN_CI:
            pytest.fail(f"CI=true requires it: {problem}")
        pytest.skip(problem)
    validator = Draft7Validator(json.loads(SPEC.read_text()))
    problems = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not problems, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in problems[:10])


def test_every_event_both_ways_is_documented(document: dict[str, Any]) -> None:
    names = {message["name"] for message in document["components"]["messages"].values()}
    from_nodes = {*protocol.HANDLERS, *protocol.BUFFERED}
    to_nodes = {*CommandType.values, "connection.ack", "register.ack", "error"}
    assert from_nodes | to_nodes <= names, sorted((from_nodes | to_nodes) - names)
    schemas = document["components"]["schemas"]
    statuses = schemas["DeploymentStatus"]["allOf"][1]["properties"]["data"]["properties"]["status"]["enum"]
    assert set(statuses) == set(NODE_STATUS)
    levels = schemas["DeploymentLogs"]["allOf"][1]["properties"]["data"]["properties"]["logs"]["items"]
    assert set(levels["properties"]["level"]["enum"]) == set(LogLevel.values)


def test_every_error_code_the_gateway_sends_is_documented(document: dict[str, Any]) -> None:
    source = "\n".join(path.read_text() for path in (ROOT / "gateway").glob("*.py"))
    sent = set(re.findall(r"(?:ProtocolError|error_reply)\(\s*\"([A-Z_]+)\"", source))
    sent |= set(re.findall(r"\"code\": \"([A-Z_]+)\"", source))
    assert sent, "the pattern no longer finds the gateway's error codes"
    documented = set(document["components"]["schemas"]["ErrorCode"]["enum"])
    assert sent <= documented, sorted(sent - documented)


def test_it_is_served_next_to_swagger_and_linked_from_it(db: None) -> None:
    response = Client().get("/api-docs/asyncapi.yaml")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(response.content)["asyncapi"] == "3.0.0"
    schema = yaml.safe_load(Client().get("/api-docs/schema").content)
    assert "/api-docs/asyncapi.yaml" in schema["info"]["description"]
