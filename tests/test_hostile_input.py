"""Hostile input: values of the wrong type or out of range are a 400 (or an error reply), never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import assert_error
from tests.support.executions import URL as EXECUTIONS_URL
from tests.support.executions import step
from tests.support.factories import NodeFactory
from tests.support.personas import Personas

# --- steps[].command.type of the wrong JSON type ---


@pytest.mark.django_db
@pytest.mark.parametrize("bad_type", [{"a": 1}, ["model.download"], 7, None])
def test_command_type_that_is_not_a_string_is_a_400_naming_the_field(personas: Personas, bad_type: Any) -> None:
    client = personas.owner_a
    NodeFactory.create(node_id="node-gpu-01", actor=client.principal)
    bad_step = step(0)
    bad_step["command"]["type"] = bad_type
    body = {"executionId": "exec-1", "name": "x", "category": "model", "type": "t", "nodeId": "node-gpu-01"}
    error = assert_error(client.post(EXECUTIONS_URL, {**body, "steps": [bad_step]}, format="json"), 400)
    assert any(line.startswith("steps[0].command.type") for line in error["errors"]), error
    assert client.post(EXECUTIONS_URL, {**body, "steps": [step(0)]}, format="json").status_code == 201
    for method in (client.put, client.patch):
        error = assert_error(method(f"{EXECUTIONS_URL}/exec-1", {"steps": [bad_step]}, format="json"), 400)
        assert any(line.startswith("steps[0].command.type") for line in error["errors"]), error


# --- page and limit: ASCII digits only ---


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["page", "limit"])
@pytest.mark.parametrize("raw", ["²", "①", "٣", "\uff11", "1²", " 1", "+1"])
def test_page_and_limit_accept_only_ascii_digits(personas: Personas, name: str, raw: str) -> None:
    for url in ("/api/nodes", EXECUTIONS_URL):
        error = assert_error(personas.owner_a.get(url, {name: raw}), 400, url)
        assert any(line.startswith(name) for line in error["errors"]), error


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["page", "limit"])
def test_page_and_limit_of_thousands_of_digits_are_too_large(personas: Personas, name: str) -> None:
    error = assert_error(personas.owner_a.get("/api/nodes", {name: "9" * 5000}), 400)
    assert any("greater than" in line for line in error["errors"]), error
    assert personas.owner_a.get("/api/nodes", {name: "0002"}).status_code == 200
