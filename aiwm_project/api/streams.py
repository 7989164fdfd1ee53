"""A Server-Sent Events answer: the live events stream (console.events) and a streamed chat turn
(inference.views) are sent the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse


def event_stream(frames: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """`frames` (an async iterator: the server runs it on the event loop, no thread is held) as
    `text/event-stream`, which neither a cache, nor a proxy that compresses, nor nginx's buffer may
    hold back: each frame must reach the browser when it is written."""
    response = StreamingHttpResponse(frames, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"
    return response
