"""Step definitions of a workflow: check the dependency graph and build the stored step documents.

Pure functions (no database): the services add the node checks. A step document keeps the
contract's camelCase keys, because `steps` is returned to clients exactly as stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict, TypeGuard

from executions.choices import COMMAND_RESOURCE_TYPE, COMMAND_TYPE_HINTS, STEP_COMMAND_TYPES, StepStatus
from executions.models import MAX_STEPS, MAX_TIMEOUT_SECONDS


class CommandResource(TypedDict):
    type: str | None
    id: str | None


class StepCommand(TypedDict):
    """What a step sends to its node: a node protocol command (`model.download`, `deployment.*`)."""

    type: str
    resource: CommandResource
    data: dict[str, Any]


class StepError(TypedDict):
    code: str
    message: str
    details: NotRequired[Any]


class StepDefinition(TypedDict):
    """A step as a client (or a workflow builder) defines it: the input of `build_steps`."""

    index: int
    name: str
    description: NotRequired[str | None]
    command: NotRequired[StepCommand | None]
    nodeId: NotRequired[str | None]
    timeoutSeconds: NotRequired[int | None]
    dependsOn: list[int]
    optional: NotRequired[bool]


class StepDocument(TypedDict):
    """A step as stored in `Execution.steps` and returned to clients: its definition plus the run
    state the engine writes (status, progress, times, result, error, the command it waits for)."""

    index: int
    name: str
    description: str | None
    status: str
    progress: int
    command: StepCommand | None
    nodeId: str | None
    startedAt: str | None
    completedAt: str | None
    timeoutSeconds: int | None
    result: Any
    error: StepError | dict[str, Any] | None
    sentMessageId: str | None
    receivedMessageId: str | None
    dependsOn: list[int]
    optional: bool


# What a client defines; everything else in a step document is run state written by the engine.
DEFINITION_KEYS = ("index", "name", "description", "command", "nodeId", "timeoutSeconds", "dependsOn", "optional")
MAX_REPORTED_CYCLES = 5


def command_type_problem(value: Any) -> str | None:
    """Why `value` is not a command a step can send, or None when it is one."""
    if not isinstance(value, str):
        # An object or a list cannot be looked up (unhashable): refused by its JSON type first.
        return f"must be a string, one of: {', '.join(STEP_COMMAND_TYPES)}"
    if value in STEP_COMMAND_TYPES:
        return None
    if value in COMMAND_TYPE_HINTS:
        return f"{value!r} is not a node command; use {COMMAND_TYPE_HINTS[value]}"
    return f"{str(value)[:64]!r} is not one of: {', '.join(STEP_COMMAND_TYPES)}"


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def new_step_document(definition: Mapping[str, Any], *, default_node_id: str | None) -> StepDocument:
    """A step as stored at create: the client's definition, run state reset (pending, progress 0)."""
    sent = definition.get("command")
    command: StepCommand | None = None
    if sent:
        resource = sent.get("resource") or {}
        command = {
            "type": sent["type"],
            "resource": {"type": resource.get("type"), "id": resource.get("id")},
            "data": dict(sent.get("data") or {}),
        }
    return {
        "index": definition["index"],
        "name": definition["name"],
        "description": definition.get("description"),
        "status": StepStatus.PENDING.value,
        "progress": 0,
        "command": command,
        "nodeId": definition.get("nodeId") or default_node_id,
        "startedAt": None,
        "completedAt": None,
        "timeoutSeconds": definition.get("timeoutSeconds"),
        "result": None,
        "error": None,
        "sentMessageId": None,
        "receivedMessageId": None,
        "dependsOn": list(definition.get("dependsOn") or []),
        "optional": bool(definition.get("optional", False)),
    }


def reset_step(step: Mapping[str, Any]) -> StepDocument:
    """The stored step with its run state cleared, to run again (start with force, retry)."""
    return new_step_document(step_definition(step), default_node_id=step.get("nodeId"))


def step_definition(step: Mapping[str, Any]) -> dict[str, Any]:
    """The client-defined part of a stored step (to tell a real edit from a round-tripped GET body)."""
    return {key: step.get(key) for key in DEFINITION_KEYS}


def build_steps(
    definitions: Sequence[Mapping[str, Any]], *, default_node_id: str | None
) -> tuple[list[StepDocument], list[str]]:
    """Validate a workflow's steps and return (step documents sorted by index, problems).

    Rules: at most MAX_STEPS steps; indexes are exactly 0..n-1 (each once, any order given);
    `dependsOn` names other existing steps, each once, without cycles; a command is a known node
    command whose resource type matches it, and its step has a node (its own or the execution's).
    Problems are one line each, prefixed with the position in the list sent (`steps[2].dependsOn`).
    """
    if len(definitions) > MAX_STEPS:
        return [], [f"steps: at most {MAX_STEPS} steps are allowed, got {len(definitions)}"]
    count = len(definitions)
    problems: list[str] = []
    position_of: dict[int, int] = {}
    index_ok = True
    for position, step in enumerate(definitions):
        where = f"steps[{position}]"
        index = step.get("index")
        if not _is_int(index):
            index_ok = False
            problems.append(f"{where}.index: must be an integer")
        elif not 0 <= index < count:
            index_ok = False
            problems.append(
                f"{where}.index: {index} is out of range; {count} steps use the indexes 0..{count - 1}, each once"
            )
        elif index in position_of:
            index_ok = False
            problems.append(f"{where}.index: {index} is already used by steps[{position_of[index]}]")
        else:
            position_of[index] = position
        if not isinstance(step.get("name"), str) or not step["name"].strip():
            problems.append(f"{where}.name: is required")
        problems.extend(_timeout_problems(where, step.get("timeoutSeconds")))
        problems.extend(_command_problems(where, step, default_node_id))

    graph: dict[int, list[int]] = {}
    for position, step in enumerate(definitions):
        where = f"steps[{position}].dependsOn"
        depends_on = step.get("dependsOn") or []
        if not isinstance(depends_on, list) or not all(_is_int(d) for d in depends_on):
            problems.append(f"{where}: must be a list of step indexes (integers)")
            continue
        index = step.get("index")
        edges: list[int] = []
        for dependency in depends_on:
            if dependency == index:
                problems.append(f"{where}: step {index} cannot depend on itself")
            elif dependency in edges:
                problems.append(f"{where}: lists step {dependency} more than once")
            elif index_ok and dependency not in position_of:
                problems.append(f"{where}: step {dependency} does not exist")
            else:
                edges.append(dependency)
        if _is_int(index):
            graph[index] = edges

    # A cycle is only meaningful once every index names exactly one step.
    if index_ok:
        for cycle in find_cycles(graph):
            chain = " -> ".join(str(i) for i in cycle)
            problems.append(f"steps: dependsOn forms a cycle {chain} (each step waits for the next; none can start)")
    if problems:
        return [], problems
    documents = [new_step_document(step, default_node_id=default_node_id) for step in definitions]
    return sorted(documents, key=lambda doc: doc["index"]), []


def _timeout_problems(where: str, timeout: Any) -> list[str]:
    if timeout is None:
        return []
    if not _is_int(timeout) or not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
        return [f"{where}.timeoutSeconds: must be a whole number of seconds from 1 to {MAX_TIMEOUT_SECONDS}"]
    return []


def _command_problems(where: str, step: Mapping[str, Any], default_node_id: str | None) -> list[str]:
    command = step.get("command")
    if not command:
        return []
    problems = []
    command_type = command.get("type")
    problem = command_type_problem(command_type)
    if problem:
        problems.append(f"{where}.command.type: {problem}")
    resource_type = (command.get("resource") or {}).get("type")
    expected = COMMAND_RESOURCE_TYPE.get(command_type) if isinstance(command_type, str) else None
    if expected and resource_type != expected:
        problems.append(f"{where}.command.resource.type: {command_type} acts on a {expected}, not {resource_type!r}")
    if not (step.get("nodeId") or default_node_id):
        problems.append(f"{where}.nodeId: a step with a command needs a node (set nodeId on the step or execution)")
    return problems


def find_cycles(graph: Mapping[int, Iterable[int]], limit: int = MAX_REPORTED_CYCLES) -> list[list[int]]:
    """Cycles of a `step -> dependency` graph, each as a closed path (`[0, 2, 1, 0]`), distinct, at most `limit`.

    Iterative depth-first search, so 100 chained steps cannot exhaust the Python stack.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    cycles: list[list[int]] = []
    seen: set[frozenset[int]] = set()
    for root in sorted(graph):
        if colour[root] != white:
            continue
        colour[root] = grey
        path = [root]
        pending = [iter(graph[root])]
        while pending:
            following = next(pending[-1], None)
            if following is None:
                pending.pop()
                colour[path.pop()] = black
            elif colour.get(following, black) == white:
                colour[following] = grey
                path.append(following)
                pending.append(iter(graph[following]))
            elif colour.get(following) == grey:
                cycle = [*path[path.index(following) :], following]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
                    if len(cycles) >= limit:
                        return cycles
    return cycles


def involved_node_ids(node_id: str | None, steps: Iterable[Mapping[str, Any]]) -> list[str]:
    """The execution's node, then each step's node in index order, each once."""
    nodes = [node_id, *(step.get("nodeId") for step in steps)]
    return list(dict.fromkeys(n for n in nodes if n))
