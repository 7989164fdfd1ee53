"""The correlation id of the work in progress (an HTTP request), for log lines and error bodies.

Set by `aiwm_project.middleware.CorrelationIdMiddleware`; read wherever a log line or an error
body is written, without that code knowing about HTTP.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

CORRELATION_HEADER = "x-correlation-id"
correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def accepted_correlation_id(supplied: str) -> str:
    """A sane client x-correlation-id as it is, anything else replaced by a UUID4: an arbitrary
    client string must not be able to inject into log lines or headers."""
    return supplied if _SAFE_ID.match(supplied) else str(uuid.uuid4())


def current_correlation_id() -> str:
    return correlation_id_var.get()


class CorrelationIdLogFilter(logging.Filter):
    """Puts the current correlation id on every log record (`%(correlation_id)s`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id_var.get()
        return True
