"""A JSON parser that turns every hostile body into a 400 instead of a 500 further down."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


# Integers anywhere in a document (free-form JSON too: command `data`, tool `parameters`) fit in a
# signed 64-bit integer, what every database column and a daemon's JSON decoder can hold.
INT64_MAX = 2**63 - 1


class JSONValueError(ParseError):
    """A value the service will not hold, named by its place in the document (`totalInferences`,
    `data.gpu[0].memory`): its message is that one line, and it is the 400's `errors` too."""

    def __init__(self, path: str, problem: str):
        line = f"{path}: {problem}" if path else problem
        super().__init__(line)
        self.errors = [line]


def _path_to(value: Any, wanted: Any) -> str:
    """Where `wanted` (an object inside `value`) sits, as `a.b[2].c`. Only on the error path: the
    check itself keeps no paths, so valid documents cost nothing extra."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if item is wanted:
            return path
        if isinstance(item, dict):
            stack.extend((child, f"{path}.{key}" if path else str(key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return ""


def check_json_value(value: Any, max_depth: int) -> None:
    """Reject nesting deeper than max_depth, NUL characters (PostgreSQL cannot store them) and
    integers beyond 64 bits.

    Iterative, so a hostile document cannot exhaust the Python stack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise ParseError(f"JSON is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if "\x00" in key:
                        raise ParseError("JSON strings must not contain NUL characters")
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and "\x00" in item:
            raise ParseError("JSON strings must not contain NUL characters")
        elif isinstance(item, int) and not isinstance(item, bool) and not -INT64_MAX <= item <= INT64_MAX:
            raise JSONValueError(_path_to(value, item), f"integers must be within ±{INT64_MAX} (64 bits)")


def loads_strict(raw: bytes | str, max_depth: int | None = None) -> Any:
    """Parse JSON strictly: no NaN/Infinity, no overflowing floats, bounded depth, no NUL."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise ParseError("JSON is nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"Malformed JSON: {exc}") from exc
    check_json_value(value, max_depth or settings.AIWM_MAX_JSON_DEPTH)
    return value


class SafeJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        if not raw:
            return {}
        return loads_strict(raw)
