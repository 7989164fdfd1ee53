"""The correlation id of the work in progress (an HTTP request), for log lines and error bodies.

Set by `aiwm_project.middleware.CorrelationIdMiddleware`; read wherever a log line or an error
body is written, without that code knowing about HTTP.
"""

from __future__ import annotations

import contextvars
import logging

CORRELATION_HEADER = "x-correlation-id"
correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")


def current_correlation_id() -> str:
    return correlation_id_var.get()


class CorrelationIdLogFilter(logging.Filter):
    """Puts the current correlation id on every log record (`%(correlation_id)s`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id_var.get()
        return True
