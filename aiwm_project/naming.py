"""JSON names: the contract's camelCase over the models' snake_case."""

from __future__ import annotations

import re

_CAMEL_RE = re.compile(r"_([a-z0-9])")


def camelize(name: str) -> str:
    """`cpu_cores` -> `cpuCores`; the primary key `id` is the contract's `_id`."""
    if name == "id":
        return "_id"
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)
