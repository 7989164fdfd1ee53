"""A small OpenAI-compatible server on a real port (aiohttp, in a thread of its own): fixed short
answers, streamed or not, with a configurable delay; it records every request and every stream
its client left before the end. The gateway's tests route to several of these; its benchmark
measures AIWM against one. Run as a process: `python tests/support/fake_openai.py --port P`.

Like llama.cpp's server it sends no `usage` in a stream and answers `/extras/tokenize/count`
(one token per word) — unless `stream_usage` is set. With `tool_call` (`--tool-call NAME ARGS`) it is
a model that calls a tool whenever it is offered tools, deterministically: the conversations' tests
need one, and no small real model does that reliably.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

WORDS = ["Hello", " from", " the", " fake", " model", "."]


@dataclass
class Behaviour:
    delay: float = 0.0  # before the answer's head
    token_gap: float = 0.0  # between streamed tokens
    tokens: int = len(WORDS)
    status: int = 200
    stream_usage: bool = False
    break_after: int = 0  # a stream's connection dropped (no end) after this many tokens
    # A model that calls tools: offered tools, it calls this one (function name, JSON arguments);
    # given the tool's result, it answers "The tool said: <result>".
    tool_call: tuple[str, str] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: int = 0  # streams whose client went away before the end
    finished: int = 0


def _words(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(n)]


async def _answer_with_tool_calls(
    request: web.Request, body: dict[str, Any], base: dict[str, Any], calls: list[dict[str, Any]]
) -> web.StreamResponse:
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    if not body.get("stream"):
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index, call in enumerate(calls):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2  # the arguments in two pieces, as real servers stream them
        pieces = [
            {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": arguments[:half]},
            },
            {"index": index, "function": {"arguments": arguments[half:]}},
        ]
        for piece in pieces:
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"tool_calls": [piece]}}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    end = {
        **base,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    }
    await response.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
    await response.write_eof()
    return response


def build_app(b: Behaviour) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        b.requests.append({"path": request.path, "body": body})
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.status != 200:
            return web.json_response({"error": {"message": "fake failure", "type": "server_error"}}, status=b.status)
        # Its answer ends by itself after `tokens` words, or earlier at max_tokens.
        words = _words(min(int(body.get("max_tokens") or b.tokens), b.tokens))
        chat = request.path.endswith("/chat/completions")
        base = {"id": "cmpl-fake", "created": int(time.time()), "model": body.get("model")}
        if chat and b.tool_call is not None:
            last = (body.get("messages") or [{}])[-1]
            if last.get("role") == "tool":
                words = ["The tool said: ", str(last.get("content"))]
            elif body.get("tools"):
                name, arguments = b.tool_call
                call = {
                    "id": f"call_{len(b.requests)}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
                return await _answer_with_tool_calls(request, body, base, [call])
        if not body.get("stream"):
            usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "stop"}
                if chat
                else {"index": 0, "text": "".join(words), "finish_reason": "stop"}
            )
            kind = "chat.completion" if chat else "text_completion"
            return web.json_response({**base, "object": kind, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        try:
            for i, word in enumerate(words):
                if b.break_after and i == b.break_after:
                    assert request.transport is not None
                    request.transport.abort()  # a server that died mid-answer
                    b.cancelled += 1
                    return response
                piece = {"index": 0, "delta": {"content": word}} if chat else {"index": 0, "text": word}
                await response.write(f"data: {json.dumps({**base, 'object': kind, 'choices': [piece]})}\n\n".encode())
                if b.token_gap:
                    await asyncio.sleep(b.token_gap)
            end = (
                {"index": 0, "delta": {}, "finish_reason": "stop"}
                if chat
                else {"index": 0, "text": "", "finish_reason": "stop"}
            )
            await response.write(f"data: {json.dumps({**base, 'object': kind, 'choices': [end]})}\n\n".encode())
            if b.stream_usage:
                usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
                await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            b.finished += 1
        except (ConnectionResetError, asyncio.CancelledError):
            b.cancelled += 1
            raise
        return response

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        b.requests.append({"path": request.path, "body": body})
        inputs = body.get("input") if isinstance(body.get("input"), list) else [body.get("input")]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i, _ in enumerate(inputs)]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
        )

    async def tokenize_count(request: web.Request) -> web.Response:
        body = await request.json()
        b.requests.append({"path": request.path, "body": body})
        return web.json_response({"count": len(str(body.get("input", "")).split())})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/extras/tokenize/count", tokenize_count)
    return app


class FakeOpenAI:
    """The server in a thread of the calling process; `stop()` ends it (a deployment that died)."""

    def __init__(self, port: int, behaviour: Behaviour | None = None) -> None:
        self.port, self.behaviour = port, behaviour or Behaviour()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "the fake OpenAI server did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(build_app(self.behaviour), handle_signals=False)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._runner is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tokens", type=int, default=len(WORDS))
    parser.add_argument("--token-gap", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--tool-call", nargs=2, metavar=("NAME", "ARGUMENTS"), help="call this tool when offered tools")
    args = parser.parse_args()
    print(f"fake OpenAI server on port {args.port}", flush=True)
    tool_call = (args.tool_call[0], args.tool_call[1]) if args.tool_call else None
    behaviour = Behaviour(tokens=args.tokens, token_gap=args.token_gap, tool_call=tool_call)
    web.run_app(build_app(behaviour), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
