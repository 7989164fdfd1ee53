"""The OpenAPI schema as a client generator reads it: `openapi-typescript` (npm) generates the
types of a TypeScript client from it, and `tsc --strict` type-checks code written against them —
the list envelope, the error body on every error answer, typed and enumerated filters."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.support.environment import IN_CI, ROOT

TOOLS = ROOT / "tests" / "ts_client" / "node_modules" / ".bin"

CLIENT = """
import type { components, paths } from "./api";

type Json<T> = T extends { content: { "application/json": infer B } } ? B : never;
type NodeList = Json<paths["/api/nodes"]["get"]["responses"]["200"]>;
type DeploymentFilters = NonNullable<paths["/api/deployments"]["get"]["parameters"]["query"]>;
type Error = components["schemas"]["Error"];

export function total(list: NodeList): number {
  return list.pagination.total ?? list.data.length;
}

const notFound: Json<paths["/api/nodes/{id}"]["get"]["responses"]["404"]> = {
  statusCode: 404,
  message: "Node with ID x not found",
  timestamp: "2025-11-16T10:30:00.000Z",
  path: "/api/nodes/x",
  correlationId: "c",
};
const conflict: Json<paths["/api/deployments/{id}"]["delete"]["responses"]["409"]> = notFound;
const refused: Json<paths["/api/nodes"]["post"]["responses"]["413"]> = conflict;
export const errors: Error[] = [notFound, conflict, refused];

export const running: DeploymentFilters["filter[isRunning]"] = true;
export const status: DeploymentFilters["filter[status]"] = "running";
// @ts-expect-error: not one of the deployment statuses
export const unknown: DeploymentFilters["filter[status]"] = "exploded";

// A sub-resource documents its own parameters, not its parent list's filters.
type CommandQuery = NonNullable<paths["/api/nodes/{id}/commands"]["get"]["parameters"]["query"]>;
export const commandStatus: CommandQuery["status"] = "queued";
// @ts-expect-error: the node list's filter is not a parameter of a node's commands
export const parentFilter: CommandQuery["filter[status]"] = "online";
"""


@pytest.fixture(scope="module")
def tools() -> Path:
    if shutil.which("node") is None or not (TOOLS / "tsc").exists():
        problem = "node or tests/ts_client's npm packages are missing: run `make node-deps`"
        if IN_CI:
            pytest.fail(f"CI=true requires them: {problem}")
        pytest.skip(problem)
    return TOOLS


def test_a_generated_typescript_client_type_checks(tools: Path, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))
    generate = subprocess.run(
        [str(tools / "openapi-typescript"), str(schema), "-o", str(tmp_path / "api.d.ts")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generate.returncode == 0, generate.stdout[-2000:] + generate.stderr[-2000:]
    (tmp_path / "client.ts").write_text(CLIENT)
    check = subprocess.run(
        [
            str(tools / "tsc"),
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
            str(tmp_path / "client.ts"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
