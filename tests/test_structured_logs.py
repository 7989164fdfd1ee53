"""Structured logs (`AIWM_LOG_FORMAT=json`): one JSON object per line, naming the request's
correlation id, the node and the execution the line is about.

The gateway's and the engine's lines are caught from the real service (a live gateway and a
python-socketio daemon) through the formatter and filter the setting installs; a `manage.py`
process shows the setting itself switches the console to JSON, and refuses a format it does not
know.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from aiwm_project.correlation import CorrelationIdLogFilter, JsonLogFormatter, correlation_id_var
from executions.engine import executions_sweep
from tests.support.daemons import daemon_for, message
from tests.support.factories import AIModelFactory, NodeFactory
from tests.support.live_server import LiveGateway, Rest

ROOT = Path(__file__).resolve().parent.parent
NODE = "node-gpu-01"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the `aiwm` loggers write, through the json formatter and the context filter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(CorrelationIdLogFilter())
    logger = logging.getLogger("aiwm")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_the_request_correlation_id(json_lines: io.StringIO) -> None:
    token = correlation_id_var.set("req-42")
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logging.getLogger("aiwm.test").exception("failed:\n%s", "multi-line detail")
    finally:
        correlation_id_var.reset(token)
    logging.getLogger("aiwm.test").info("outside any request")
    lines = json_lines.getvalue().splitlines()
    assert len(lines) == 2  # newlines in messages and tracebacks stay inside the strings
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "ERROR" and first["logger"] == "aiwm.test"
    assert first["message"] == "failed:\nmulti-line detail" and first["correlationId"] == "req-42"
    assert "ValueError: boom" in str(first["exception"])
    assert str(first["time"]).endswith("+00:00") and "T" in str(first["time"])
    assert "correlationId" not in second and "nodeId" not in second and "executionId" not in second


@pytest.mark.django_db(transaction=True)
def test_gateway_and_engine_lines_name_the_node_and_the_execution(
    gateway: LiveGateway, json_lines: io.StringIO
) -> None:
    _, token = NodeFactory.with_token(node_id=NODE)
    AIModelFactory.create(model_id="tiny-v1", name="Tiny", node_id=NODE)
    rest = Rest(gateway)

    async def scenario() -> str:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            body = await rest.apost("/api/models/tiny-v1/download", {}, expect=200)
            command = await daemon.expect("model.download")
            await daemon.barrier()
        await sync_to_async(executions_sweep)(now=timezone.now() + timedelta(hours=7))  # the step expires
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            answer = {"originalMessageId": command["messageId"], "status": "success", "progress": 100}
            await daemon.send(message("command.result", answer, metadata=command["metadata"]))  # too late
            await daemon.send(message("command.ack", {"status": "received"}))  # names no command
            await daemon.error("REJECTED")
        return str(body["executionId"])

    execution_id = async_to_sync(scenario)()
    lines = records(json_lines)
    late = [r for r in lines if "command.result" in str(r["message"]) and "ignored" in str(r["message"])]
    assert late and late[0]["nodeId"] == NODE and late[0]["executionId"] == execution_id
    refused = [r for r in lines if r["level"] == "WARNING" and r["logger"] == "aiwm.gateway.protocol"]
    assert refused and refused[0]["nodeId"] == NODE and "executionId" not in refused[0]


def manage(*args: str, log_format: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIWM_LOG_FORMAT": log_format, "DJANGO_SETTINGS_MODULE": "aiwm_project.settings"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_setting_switches_the_console_to_json_and_refuses_an_unknown_format() -> None:
    code = "import logging; logging.getLogger('aiwm.check').warning('hello\\nworld')"
    done = manage("shell", "-c", code, log_format="json")
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    assert line["message"] == "hello\nworld" and line["level"] == "WARNING" and line["logger"] == "aiwm.check"
    refused = manage("check", log_format="xml")
    assert refused.returncode != 0 and "AIWM_LOG_FORMAT must be plain or json" in refused.stderr
