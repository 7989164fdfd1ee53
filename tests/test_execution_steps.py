"""Step definitions at create: every bad dependency graph or command is a 400 and creates nothing."""

from __future__ import annotations

from typing import Any

import pytest

from executions.models import Execution
from executions.steps import build_steps, find_cycles
from tests.support.api import assert_error
from tests.support.executions import URL
from tests.support.factories import NodeFactory
from tests.support.personas import Personas


def step(index: Any, name: str = "", **fields: Any) -> dict[str, Any]:
    return {"index": index, "name": name or f"step {index}", **fields}


def download(model_id: str = "llama-2-7b-v1") -> dict[str, Any]:
    return {"type": "model.download", "resource": {"type": "model", "id": model_id}, "data": {}}


@pytest.fixture
def client(personas: Personas) -> Any:
    NodeFactory.create(node_id="node-gpu-01", actor=personas.owner_a.principal)
    NodeFactory.create(node_id="node-of-org-b", actor=personas.owner_b.principal)
    return personas.owner_a


def post_steps(client: Any, steps: Any, **fields: Any) -> Any:
    body = {"name": "Workflow", "category": "batch", "type": "steps-check", "nodeId": "node-gpu-01", **fields}
    return client.post(URL, {**body, "steps": steps}, format="json")


def rejected(client: Any, steps: Any, **fields: Any) -> list[str]:
    body = assert_error(post_steps(client, steps, **fields), 400, URL)
    assert body["message"] == "Validation failed"
    assert not Execution.objects.exists(), "a rejected execution must not be stored"
    return body["errors"]


# --- dependencies ---


def test_two_step_cycle_is_reported(client: Any) -> None:
    errors = rejected(client, [step(0, dependsOn=[1]), step(1, dependsOn=[0])])
    assert errors == ["steps: dependsOn forms a cycle 0 -> 1 -> 0 (each step waits for the next; none can start)"]


def test_three_step_cycle_is_reported_with_its_path(client: Any) -> None:
    steps = [step(0), step(1, dependsOn=[0, 3]), step(2, dependsOn=[1]), step(3, dependsOn=[2])]
    errors = rejected(client, steps)
    assert len(errors) == 1 and "cycle 1 -> 3 -> 2 -> 1" in errors[0], errors


def test_every_separate_cycle_is_reported(client: Any) -> None:
    steps = [step(0, dependsOn=[1]), step(1, dependsOn=[0]), step(2, dependsOn=[3]), step(3, dependsOn=[2])]
    errors = rejected(client, steps)
    assert [e.split("cycle ")[1].split(" (")[0] for e in errors] == ["0 -> 1 -> 0", "2 -> 3 -> 2"]


def test_unknown_dependency(client: Any) -> None:
    errors = rejected(client, [step(0), step(1, dependsOn=[0, 7])])
    assert errors == ["steps[1].dependsOn: step 7 does not exist"]


def test_self_dependency(client: Any) -> None:
    errors = rejected(client, [step(0), step(1, dependsOn=[1])])
    assert errors == ["steps[1].dependsOn: step 1 cannot depend on itself"]


def test_duplicate_dependency_entries(client: Any) -> None:
    errors = rejected(client, [step(0), step(1, dependsOn=[0, 0])])
    assert errors == ["steps[1].dependsOn: lists step 0 more than once"]


@pytest.mark.parametrize("bad", ["0", 0.5, 1.0, True, None, [0], {"index": 0}, -1])
def test_non_integer_or_negative_depends_on_entries(client: Any, bad: Any) -> None:
    errors = rejected(client, [step(0), step(1, dependsOn=[bad])])
    assert len(errors) == 1 and errors[0].startswith("steps[1].dependsOn[0]"), errors


def test_depends_on_must_be_a_list(client: Any) -> None:
    errors = rejected(client, [step(0), step(1, dependsOn=0)])
    assert len(errors) == 1 and errors[0].startswith("steps[1].dependsOn"), errors


# --- indexes ---


def test_duplicate_indexes(client: Any) -> None:
    errors = rejected(client, [step(0), step(0, "again")])
    assert "steps[1].index: 0 is already used by steps[0]" in errors
    assert not any("cycle" in e for e in errors)


def test_negative_index(client: Any) -> None:
    errors = rejected(client, [step(-1)])
    assert errors == ["steps[0].index: Ensure this value is greater than or equal to 0."]


def test_indexes_must_run_from_zero_without_gaps(client: Any) -> None:
    errors = rejected(client, [step(0), step(2)])
    assert errors == ["steps[1].index: 2 is out of range; 2 steps use the indexes 0..1, each once"]


@pytest.mark.parametrize("bad", ["0", 0.0, None, True])
def test_index_must_be_an_integer(client: Any, bad: Any) -> None:
    errors = rejected(client, [step(bad)])
    assert len(errors) == 1 and errors[0].startswith("steps[0].index"), errors


def test_steps_given_out_of_order_are_stored_by_index(client: Any) -> None:
    response = post_steps(client, [step(2, dependsOn=[0, 1]), step(0), step(1, dependsOn=[0])])
    assert response.status_code == 201, response.json()
    assert [s["index"] for s in response.json()["steps"]] == [0, 1, 2]
    assert [s["name"] for s in response.json()["steps"]] == ["step 0", "step 1", "step 2"]


# --- timeouts, size, shape ---


@pytest.mark.parametrize("bad", [0, -1, -3600])
def test_non_positive_step_timeout(client: Any, bad: int) -> None:
    errors = rejected(client, [step(0, timeoutSeconds=bad)])
    assert errors == ["steps[0].timeoutSeconds: must be at least 1 second"]


def test_step_timeout_has_a_ceiling(client: Any) -> None:
    errors = rejected(client, [step(0, timeoutSeconds=10**7)])
    assert errors == ["steps[0].timeoutSeconds: must be at most 604800 seconds (7 days)"]


def test_negative_execution_timeout(client: Any) -> None:
    errors = rejected(client, [step(0)], timeoutSeconds=-1)
    assert errors == ["timeoutSeconds: must be at least 1 second"]


def test_too_many_steps(client: Any) -> None:
    errors = rejected(client, [step(i) for i in range(101)])
    assert errors == ["steps: at most 100 steps are allowed, got 101"]


def test_one_hundred_chained_steps_are_accepted(client: Any) -> None:
    steps = [step(i, dependsOn=[i - 1] if i else []) for i in range(100)]
    response = post_steps(client, steps)
    assert response.status_code == 201, response.json()
    assert len(response.json()["steps"]) == 100


def test_step_that_is_not_an_object(client: Any) -> None:
    errors = rejected(client, [step(0), "download"])
    assert len(errors) == 1 and errors[0].startswith("steps[1]: Invalid data"), errors


def test_missing_step_name(client: Any) -> None:
    errors = rejected(client, [{"index": 0}])
    assert errors == ["steps[0].name is required."]


def test_every_problem_is_listed_at_once(client: Any) -> None:
    steps = [step(0, timeoutSeconds=0), step(1, dependsOn=["x"]), {"index": 2}]
    errors = rejected(client, steps)
    assert sorted(errors) == [
        "steps[0].timeoutSeconds: must be at least 1 second",
        "steps[1].dependsOn[0]: A valid integer is required.",
        "steps[2].name is required.",
    ]


# --- commands ---


def test_unknown_command_type(client: Any) -> None:
    command = {**download(), "type": "model.explode"}
    errors = rejected(client, [step(0, command=command)])
    assert errors == [
        "steps[0].command.type: 'model.explode' is not one of: model.download, deployment.start, deployment.stop"
    ]


def test_deployment_create_points_to_deployment_start(client: Any) -> None:
    command = {"type": "deployment.create", "resource": {"type": "deployment", "id": "d"}}
    errors = rejected(client, [step(0, command=command)])
    assert errors == [
        "steps[0].command.type: 'deployment.create' is not a node command; "
        "use deployment.start (it creates and starts the container)"
    ]


def test_command_resource_must_match_the_command(client: Any) -> None:
    command = {"type": "deployment.stop", "resource": {"type": "model", "id": "llama"}}
    errors = rejected(client, [step(0, command=command)])
    assert errors == ["steps[0].command.resource.type: deployment.stop acts on a deployment, not 'model'"]


def test_command_needs_a_resource(client: Any) -> None:
    errors = rejected(client, [step(0, command={"type": "model.download"})])
    assert errors == ["steps[0].command.resource is required."]


def test_command_step_needs_a_node(client: Any) -> None:
    errors = rejected(client, [step(0, command=download())], nodeId=None)
    assert errors == ["steps[0].nodeId: a step with a command needs a node (set nodeId on the step or execution)"]


def test_step_without_command_needs_no_node(client: Any) -> None:
    response = post_steps(client, [step(0)], nodeId=None)
    assert response.status_code == 201, response.json()
    assert response.json()["steps"][0]["nodeId"] is None and response.json()["involvedNodeIds"] == []


# --- nodes ---


def test_unknown_step_node(client: Any) -> None:
    errors = rejected(client, [step(0, nodeId="node-nowhere")])
    assert errors == ["steps[0].nodeId: Node 'node-nowhere' does not exist"]


def test_step_node_of_another_organization(client: Any) -> None:
    errors = rejected(client, [step(0, nodeId="node-of-org-b")])
    assert errors == ["steps[0].nodeId: Node 'node-of-org-b' does not exist"]


def test_deleted_step_node(client: Any) -> None:
    NodeFactory.create(node_id="node-gone", actor=client.principal)
    assert client.delete("/api/nodes/node-gone").status_code == 200
    errors = rejected(client, [step(0, nodeId="node-gone")])
    assert errors == ["steps[0].nodeId: Node 'node-gone' does not exist"]


def test_unknown_execution_node_is_reported_once(client: Any) -> None:
    errors = rejected(client, [step(0), step(1, nodeId="node-gpu-01")], nodeId="node-nowhere")
    assert errors == ["nodeId: Node 'node-nowhere' does not exist"]


def test_step_node_defaults_to_the_execution_node(client: Any) -> None:
    response = post_steps(client, [step(0, command=download())])
    assert response.status_code == 201, response.json()
    assert response.json()["steps"][0]["nodeId"] == "node-gpu-01"


# --- the pure functions, for callers that skip the serializer (the engine's own workflows) ---


def test_build_steps_checks_what_the_serializer_would() -> None:
    steps, problems = build_steps(
        [
            {"index": 0, "name": "", "timeoutSeconds": 0},
            {"index": 1, "name": "b", "dependsOn": ["0"], "command": {"type": "deployment.create"}},
        ],
        default_node_id=None,
    )
    assert steps == []
    assert problems == [
        "steps[0].name: is required",
        "steps[0].timeoutSeconds: must be a whole number of seconds from 1 to 604800",
        "steps[1].command.type: 'deployment.create' is not a node command; "
        "use deployment.start (it creates and starts the container)",
        "steps[1].nodeId: a step with a command needs a node (set nodeId on the step or execution)",
        "steps[1].dependsOn: must be a list of step indexes (integers)",
    ]


def test_find_cycles_on_a_diamond_finds_none() -> None:
    assert find_cycles({0: [], 1: [0], 2: [0], 3: [1, 2]}) == []
    assert find_cycles({0: [0]}) == [[0, 0]]
