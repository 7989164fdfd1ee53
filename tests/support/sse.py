"""A Server-Sent Events client for the tests: aiohttp streaming a real HTTP response, parsed as
a browser's EventSource does (id, event, data, comments)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

TIMEOUT = 10.0


@dataclass
class SseEvent:
    id: str
    type: str
    data: dict[str, Any]


@dataclass
class SseStream:
    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)
    last_id: str = ""

    async def next(self, timeout: float = TIMEOUT) -> SseEvent:
        """The next event (comments and `retry:` lines are recorded, not returned)."""
        event_id, event_type, data = "", "message", list[str]()
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\n")
                if line == "":
                    if data:
                        self.last_id = event_id or self.last_id
                        return SseEvent(event_id, event_type, json.loads("\n".join(data)))
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    self.comments.append(value)
                elif name == "id":
                    event_id = value
                elif name == "event":
                    event_type = value
                elif name == "data":
                    data.append(value)

    async def until(self, match: Callable[[SseEvent], bool], timeout: float = TIMEOUT) -> SseEvent:
        """Skip events until one matches."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if match(event):
                    return event

    async def each(self, *matches: Callable[[SseEvent], bool], timeout: float = TIMEOUT) -> list[SseEvent]:
        """Skip events until each predicate matched one (in any order); the matches in predicate order."""
        found: dict[int, SseEvent] = {}
        async with asyncio.timeout(timeout):
            while len(found) < len(matches):
                event = await self.next(timeout)
                for i, match in enumerate(matches):
                    if i not in found and match(event):
                        found[i] = event
                        break
        return [found[i] for i in range(len(matches))]

    async def nothing_for(self, seconds: float) -> None:
        """Assert that no event arrives for `seconds` (comments may)."""
        try:
            event = await self.next(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {event}")


async def open_stream(
    session: aiohttp.ClientSession, url: str, *, headers: dict[str, str] | None = None, expect: int = 200
) -> SseStream:
    response = await session.get(url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=None, connect=10))
    assert response.status == expect, (response.status, await response.text())
    if expect == 200:
        assert response.headers["Content-Type"].startswith("text/event-stream")
    return SseStream(response)
