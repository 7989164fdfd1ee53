"""A schema-driven fuzz run: schemathesis reads /api-docs/schema and sends every operation
examples, boundary values and random (valid and invalid) input, with an owner token, to the web
process as production runs it (`manage.py serve`, PostgreSQL, Redis).

It holds when no request reaches a 500 and every answer matches the schema: its status code is
one the operation documents, its content type and its body are the documented ones (the error
body included). Bounded (a fixed seed and number of examples per operation) so it fits in
`make test`; BENCHMARKS.md gives the command of a longer run and its figures.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.live_server import free_port
from tests.support.processes import Processes, user_token

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES_PER_OPERATION = 8


def schemathesis_command(url: str, token: str, report_dir: Path, examples: int, seed: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{url}/api-docs/schema",
        *("--header", f"Authorization: Bearer {token}"),
        *("--checks", CHECKS),
        *("--phases", "examples,coverage,fuzzing"),
        *("--max-examples", str(examples), "--seed", str(seed)),
        # One worker: hypothesis parses lambdas with `ast` and CPython 3.11.7's parser is not
        # thread-safe ("AST constructor recursion depth mismatch" inside schemathesis).
        *("--workers", "1"),
        *("--report", "junit", "--report-dir", str(report_dir)),
    ]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(processes: Processes, tmp_path: Path) -> None:
    port = free_port()
    processes.start("web", "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port))
    processes.wait_healthy("web", port)
    report_dir = tmp_path / "report"
    command = schemathesis_command(f"http://127.0.0.1:{port}", user_token(), report_dir, EXAMPLES_PER_OPERATION, 1)
    # Run from the temp dir: schemathesis keeps a cache (.schemathesis/) in its working directory.
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, output
    suites = ET.parse(next(report_dir.glob("junit-*.xml"))).getroot()
    cases = suites.findall(".//testcase")
    failed = [case.get("name") for case in cases if case.find("failure") is not None or case.find("error") is not None]
    assert len(cases) >= 60, f"only {len(cases)} operations were tested\n{output}"
    assert failed == [], output
    assert "Internal Server Error" not in processes.logs()
