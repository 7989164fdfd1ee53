"""What the work in progress is about — its correlation id, the node and the execution it
concerns — for log lines and error bodies.

The correlation id is set by `aiwm_project.middleware.CorrelationIdMiddleware` (an HTTP request);
the node id by the gateway for each message a node sends; the execution id by the engine for each
transition. Code that writes a log line or an error body reads them here without knowing about
HTTP, sockets or executions. Context variables follow the work across `sync_to_async` and tasks.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

CORRELATION_HEADER = "x-correlation-id"
correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")
node_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("log_node_id", default=None)
execution_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("log_execution_id", default=None)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def accepted_correlation_id(supplied: str) -> str:
    """A sane client x-correlation-id as it is, anything else replaced by a UUID4: an arbitrary
    client string must not be able to inject into log lines or headers."""
    return supplied if _SAFE_ID.match(supplied) else str(uuid.uuid4())


def current_correlation_id() -> str:
    return correlation_id_var.get()


@contextmanager
def node_context(node_id: str) -> Iterator[None]:
    """Log lines written inside name this node."""
    token = node_id_var.set(node_id)
    try:
        yield
    finally:
        node_id_var.reset(token)


@contextmanager
def execution_context(execution_id: str | None) -> Iterator[None]:
    """Log lines written inside name this execution (None: leave what is there)."""
    if execution_id is None:
        yield
        return
    token = execution_id_var.set(execution_id)
    try:
        yield
    finally:
        execution_id_var.reset(token)


class CorrelationIdLogFilter(logging.Filter):
    """Puts the work's context on every log record: `%(correlation_id)s`, `%(node_id)s`,
    `%(execution_id)s` (the last two None when the work concerns no node or execution)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id_var.get()
        record.node_id = node_id_var.get()
        record.execution_id = execution_id_var.get()
        return True


_CONTEXT_KEYS = (("correlationId", "correlation_id"), ("nodeId", "node_id"), ("executionId", "execution_id"))


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (`AIWM_LOG_FORMAT=json`), for log collectors: time (UTC, ISO 8601
    with milliseconds), level, logger, message, and `correlationId` / `nodeId` / `executionId`
    where they apply; a traceback as `exception`. A message's newlines stay inside its string, so
    one record is always one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, attribute in _CONTEXT_KEYS:
            value = getattr(record, attribute, None)
            if value not in (None, "-"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
