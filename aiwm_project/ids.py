"""ObjectId-style identifiers: 24 hex characters, a 4-byte timestamp followed by 8 random bytes."""

from __future__ import annotations

import os
import re
import time

OBJECT_ID_RE = re.compile(r"^[0-9a-f]{24}$")
# Business ids (nodeId, modelId, ...) are chosen by clients; keep them URL- and log-safe.
BUSINESS_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")


def new_object_id() -> str:
    return f"{int(time.time()):08x}{os.urandom(8).hex()}"


def is_object_id(value: str) -> bool:
    return bool(OBJECT_ID_RE.match(value))


def is_business_id(value: str) -> bool:
    return bool(BUSINESS_ID_RE.match(value))
