"""Conversations that run: `POST /api/conversations/:id/chat` (docs/decisions.md "Conversations that run").

A turn: the user's message is stored (`prepare_turn`, before anything is sent, so it is kept
whatever happens next); the prompt is the agent's instruction, the conversation's history as far
as it fits the context budget (oldest turns dropped first) and the new message; the model is called
through the gateway (`Gateway.call`: the same routing, failover and usage records as `/v1`), with
the agent's tools offered; `api` tools the model calls are run here (inference.tools) and their
results sent back, at most AIWM_CHAT_TOOL_ROUNDS model calls; then the assistant's message, the
agent's task counters and the tools' usage are written in one transaction (`record_reply`). A call
that fails keeps the user's message with the error on it and counts a failed task (`record_failure`).
A turn may also start from the client's results of `function` tool calls (`toolResults`, stored
on the assistant message that made the calls) instead of a new user message.

`run_turn` is one async generator for both answers: the view collects it (`"stream": false`) or
sends each event as it comes (`"stream": true`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from agents.choices import AgentStatus, ToolStatus, ToolType
from agents.models import Agent, Instruction, Tool
from agents.services import agent_task_record, tool_call_record
from aiwm_project.auth import Principal
from aiwm_project.db import db_sync_to_async
from aiwm_project.exceptions import ConflictError, NotFoundError, ServiceError, ValidationFailed
from aiwm_project.ids import new_object_id
from aiwm_project.selectors import find_by_identifier, is_valid_identifier
from conversations.choices import ConversationStatus, MessageRole
from conversations.models import Conversation, Message
from conversations.services import message_create, message_update
from inference.gateway import GATEWAY, Caller, Exchange
from inference.tools import call_api_tool
from inference.usage import EventReader, estimated_tokens

# The history read for one turn, newest first, before the budget cuts it.
HISTORY_ROWS = 200
# Per message, on top of its text: the role and the chat template's markers.
MESSAGE_OVERHEAD_TOKENS = 4
FUNCTION_NAME = re.compile(r"[^A-Za-z0-9_-]")
# A failed model call answers the gateway's status when it says something about the request.
PASSED_STATUSES = frozenset({400, 404, 408, 413, 422, 429, 503, 504})


class ModelCallFailed(ServiceError):
    """The model could not answer: the gateway's status (404 unknown model, 503 nothing serves it,
    502 the deployment failed...) with its message, in the API's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        # The model's own failure (a 500, a 401 from a misconfigured server) is a 502 here: the
        # request reached a model that failed, and this API answers no 500 for what it did not do.
        self.status_code = status if status in PASSED_STATUSES else 502


def estimate_tokens(text: str) -> int:
    """A message's share of the prompt: its text at the gateway's estimate, plus its markers."""
    return estimated_tokens(text) + MESSAGE_OVERHEAD_TOKENS


def prompt_cost(parts: list[dict[str, Any]]) -> int:
    """The estimated tokens of chat messages (or tool schemas), each as the JSON sent."""
    return sum(estimate_tokens(json.dumps(part)) for part in parts)


@dataclass(frozen=True)
class OfferedTool:
    tool_id: str
    function_name: str  # OpenAI's function names are [A-Za-z0-9_-]{1,64}; toolIds may hold more
    type: str
    endpoint: str
    description: str
    parameters: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.function_name, "description": self.description, "parameters": self.parameters},
        }


@dataclass
class Turn:
    actor: Principal
    conversation_id: str
    agent_id: str
    model_id: str
    prompt: list[dict[str, Any]]
    tools: dict[str, OfferedTool]  # by function name
    user_message: Message | None  # the new user message (None when the turn goes on from toolResults)
    continued: Message | None  # the assistant message whose tool calls the client answered
    max_tokens: int
    started: float = field(default_factory=time.monotonic)


@dataclass
class ToolCallMade:
    tool_id: str
    arguments: dict[str, Any]
    result: Any
    error: str
    latency: float


@dataclass
class Reply:
    """What the turn produced so far, across model calls."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    calls_made: list[ToolCallMade] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token: float | None = None


# --- before the call (sync: the view runs it) ---


def prepare_turn(
    *,
    actor: Principal,
    conversation_ref: str,
    content: str | None = None,
    tool_results: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
) -> Turn:
    """Check that the conversation (its `_id` or conversationId) can take a turn, store what the
    client sent, build the prompt.

    `content`: a new user message. `tool_results`: the client's results of `function` tool calls
    the conversation's last assistant message made, stored on that message; the model then goes on
    from them. 404/409/400, nothing stored, when the conversation, its agent or its model is not
    there, or the results answer no pending call."""
    if not is_valid_identifier(conversation_ref):
        raise ValidationFailed([f"id: {conversation_ref[:64]!r} is not a valid id"])
    conversation = find_by_identifier(Conversation.objects.for_org(actor.org_id), conversation_ref)
    if conversation is None:
        raise NotFoundError(f"Conversation with ID {conversation_ref} not found")
    if conversation.status == ConversationStatus.COMPLETED:
        raise ConflictError(f"Conversation {conversation.conversation_id!r} is completed: it takes no new messages")
    agent = Agent.objects.for_org(actor.org_id).filter(agent_id=conversation.agent_id).first()
    if agent is None:
        raise ConflictError(f"The conversation's agent {conversation.agent_id!r} does not exist")
    if agent.status == AgentStatus.INACTIVE or not agent.is_active:
        raise ConflictError(f"Agent {agent.agent_id!r} is inactive")
    model_id = conversation.model_id or agent.model_id
    if not model_id:
        raise ValidationFailed(
            ["modelId: the conversation names no model and its agent has no default model (agent.modelId)"]
        )
    system = system_prompt(actor.org_id, agent)
    tools = offered_tools(actor.org_id, agent)
    messages = Message.objects.for_org(actor.org_id).filter(
        conversation_id=conversation.conversation_id, is_active=True
    )
    new: Message
    if tool_results is not None:
        new = answer_tool_calls(actor, messages, tool_results)
    else:
        new = message_create(
            data={
                "conversation_id": conversation.conversation_id,
                "agent_id": agent.agent_id,
                "role": MessageRole.USER,
                "content": content or "",
            },
            actor=actor,
        )
    # The new message (or the one just answered) is always sent; older ones as far as they fit.
    newest_first = list(messages.exclude(pk=new.pk).order_by("-created_at", "-id")[:HISTORY_ROWS])
    reply_tokens = max_tokens or settings.AIWM_CHAT_MAX_TOKENS
    last = replayed(new)
    budget = settings.AIWM_CHAT_CONTEXT_TOKENS - reply_tokens - estimate_tokens(system)
    budget -= prompt_cost(last) + prompt_cost([t.spec() for t in tools.values()])
    prompt = [{"role": "system", "content": system}] if system else []
    prompt += history_within(newest_first, budget)
    prompt += last
    return Turn(
        actor=actor,
        conversation_id=conversation.conversation_id,
        agent_id=agent.agent_id,
        model_id=model_id,
        prompt=prompt,
        tools=tools,
        user_message=new if tool_results is None else None,
        continued=new if tool_results is not None else None,
        max_tokens=reply_tokens,
    )


def answer_tool_calls(actor: Principal, messages: Any, results: list[dict[str, Any]]) -> Message:
    """Store the client's results on the last assistant message, whose tool calls they answer (409
    when it made no such call, or it was answered already)."""
    last = messages.order_by("-created_at", "-id").first()
    if last is None or last.role != MessageRole.ASSISTANT or not last.tool_calls:
        raise ConflictError("toolResults: the conversation's last message is not an assistant's tool call")
    pending = {c.get("id") for c in last.tool_calls if isinstance(c, dict)}
    pending -= {r.get("toolCallId") for r in last.tool_results or [] if isinstance(r, dict)}
    unknown = [r["toolCallId"] for r in results if r["toolCallId"] not in pending]
    if unknown:
        raise ConflictError(
            "toolResults: no pending tool call of the last assistant message has the id "
            + ", ".join(repr(i) for i in unknown[:10])
        )
    return message_update(instance=last, data={"tool_results": [*(last.tool_results or []), *results]}, actor=actor)


def system_prompt(org_id: str, agent: Agent) -> str:
    """The instruction's systemPrompt, then its guidelines as a list; "" without an active instruction."""
    if not agent.instruction_id:
        return ""
    instruction = (
        Instruction.objects.for_org(org_id).filter(instruction_id=agent.instruction_id, is_active=True).first()
    )
    if instruction is None:
        return ""
    text = instruction.system_prompt
    if instruction.guidelines:
        text += "\n\nGuidelines:\n" + "\n".join(f"- {line}" for line in instruction.guidelines)
    return text


def offered_tools(org_id: str, agent: Agent) -> dict[str, OfferedTool]:
    """The agent's live, active `api` and `function` tools. A `service` tool has no call AIWM could
    make; a tool deleted or deactivated since it was given to the agent is skipped."""
    if not agent.tool_ids:
        return {}
    rows = Tool.objects.for_org(org_id).filter(
        tool_id__in=agent.tool_ids,
        is_active=True,
        status=ToolStatus.ACTIVE,
        type__in=[ToolType.API, ToolType.FUNCTION],
    )
    offered = {}
    for tool in sorted(rows, key=lambda t: agent.tool_ids.index(t.tool_id)):
        name = FUNCTION_NAME.sub("_", tool.tool_id)[:64]
        offered[name] = OfferedTool(
            tool_id=tool.tool_id,
            function_name=name,
            type=tool.type,
            endpoint=tool.endpoint,
            description=tool.description or tool.name,
            parameters=tool.parameters,
        )
    return offered


def history_within(newest_first: list[Message], budget: int) -> list[dict[str, Any]]:
    """The history as chat messages, oldest first, keeping the newest turns that fit `budget`."""
    kept: list[list[dict[str, Any]]] = []
    for message in newest_first:
        replay = replayed(message)
        cost = prompt_cost(replay)
        if cost > budget:
            break
        budget -= cost
        kept.append(replay)
    return [m for replay in reversed(kept) for m in replay]


def replayed(message: Message) -> list[dict[str, Any]]:
    """A stored message as the chat messages the model saw: an assistant turn that ran tools is its
    tool calls, their results, then its text. A call without a result (a `function` tool, answered
    by nobody) is left out: the API refuses a tool call that is not answered."""
    answered = {r.get("toolCallId"): r.get("result") for r in message.tool_results or [] if isinstance(r, dict)}
    calls = [c for c in message.tool_calls or [] if isinstance(c, dict) and c.get("id") in answered]
    out: list[dict[str, Any]] = []
    if calls:
        out.append({"role": "assistant", "content": None, "tool_calls": calls})
        out += [{"role": "tool", "tool_call_id": c["id"], "content": as_text(answered[c["id"]])} for c in calls]
    if message.content:
        out.append({"role": message.role, "content": message.content})
    return out


def as_text(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result)


# --- the call (async: on the server's event loop) ---


class CapturedExchange:
    """The ASGI side of a gateway call made from inside the process: the answer's status and body
    chunks land in a bounded queue (the gateway waits while the turn is slow to read them, as it
    does for a slow client); `leave()` is a client disconnect (the upstream request is cancelled)."""

    def __init__(self) -> None:
        self.status = 0
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
        self._gone = asyncio.Event()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        await self.chunks.put(message.get("body", b""))
        if not message.get("more_body"):
            await self.chunks.put(None)

    async def receive(self) -> MutableMapping[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    def leave(self) -> None:
        self._gone.set()


class ChatStreamReader(EventReader):
    """A chat completion's Server-Sent Events: text deltas, tool-call deltas put together, an error."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[int, dict[str, Any]] = {}
        self.error = ""

    def feed(self, chunk: bytes) -> list[str]:
        """The text pieces in `chunk`."""
        pieces = []
        for name, event in self.events(chunk):
            if name == "error" or "error" in event:
                self.error = error_message(event) or "the model's stream ended with an error"
                continue
            for choice in event.get("choices") or ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if not isinstance(delta, dict):
                    continue
                if isinstance(delta.get("content"), str) and delta["content"]:
                    pieces.append(delta["content"])
                for part in delta.get("tool_calls") or ():
                    if isinstance(part, dict):
                        self._tool_call_delta(part)
        return pieces

    def _tool_call_delta(self, part: dict[str, Any]) -> None:
        index = part["index"] if isinstance(part.get("index"), int) else len(self.calls)
        call = self.calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if isinstance(part.get("id"), str):
            call["id"] = part["id"]
        function: dict[str, Any] = part["function"] if isinstance(part.get("function"), dict) else {}
        # The name comes whole in the first piece; the arguments come in pieces.
        if isinstance(function.get("name"), str) and not call["function"]["name"]:
            call["function"]["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            call["function"]["arguments"] += function["arguments"]


def error_message(document: Any) -> str:
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return error if isinstance(error, str) else ""


@dataclass
class ModelAnswer:
    content: str
    tool_calls: list[dict[str, Any]]
    exchange: Exchange


async def call_model(
    turn: Turn, messages: list[dict[str, Any]], stream: bool
) -> AsyncGenerator[str | ModelAnswer, None]:
    """One model call through the gateway: its text pieces as they come (streamed), then the answer.
    Raises ModelCallFailed."""
    body: dict[str, Any] = {
        "model": turn.model_id,
        "messages": messages,
        "max_tokens": turn.max_tokens,
        "stream": stream,
    }
    if turn.tools:
        body["tools"] = [tool.spec() for tool in turn.tools.values()]
    caller = Caller(org_id=turn.actor.org_id, user_id=turn.actor.user_id)
    captured = CapturedExchange()
    call = asyncio.ensure_future(
        GATEWAY.call(caller, "chat.completions", json.dumps(body).encode(), body, captured.receive, captured.send)
    )
    reader = ChatStreamReader()
    whole: list[bytes] = []
    text: list[str] = []
    try:
        while (chunk := await captured.chunks.get()) is not None:
            if stream and captured.status < 400:
                for piece in reader.feed(chunk):
                    text.append(piece)
                    yield piece
            else:
                whole.append(chunk)
        exchange = await call
    finally:
        if not call.done():  # the turn was cancelled (its client left): so is the model's request
            captured.leave()
            await asyncio.wait([call], timeout=10)
    if captured.status >= 400:
        message = error_message(_json(b"".join(whole))) or f"the model answered HTTP {captured.status}"
        raise ModelCallFailed(captured.status, message)
    if stream:
        if reader.error:
            raise ModelCallFailed(502, reader.error)
        yield ModelAnswer("".join(text), [reader.calls[i] for i in sorted(reader.calls)], exchange)
        return
    document = _json(b"".join(whole))
    choices = document.get("choices") if isinstance(document, dict) else None
    said = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    if not isinstance(said, dict):
        raise ModelCallFailed(502, "the model's answer has no message")
    calls = [c for c in said.get("tool_calls") or [] if isinstance(c, dict)]
    content = said["content"] if isinstance(said.get("content"), str) else ""
    yield ModelAnswer(content, calls, exchange)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def run_turn(turn: Turn, *, stream: bool) -> AsyncIterator[str | Message]:
    """The turn's text pieces (streamed only), then the stored assistant message. A failed call is
    recorded (the user's message keeps the error) and raised as ModelCallFailed; a turn cancelled
    by its client is recorded as failed too."""
    reply = Reply()
    messages = list(turn.prompt)
    try:
        for _ in range(max(settings.AIWM_CHAT_TOOL_ROUNDS, 1)):
            answer: ModelAnswer | None = None
            # aclosing: a turn that ends early closes the call at once (its finally cancels the upstream).
            async with contextlib.aclosing(call_model(turn, messages, stream)) as items:
                async for item in items:
                    if isinstance(item, ModelAnswer):
                        answer = item
                        continue
                    if reply.first_token is None:
                        reply.first_token = time.monotonic()
                    yield item
            assert answer is not None
            if reply.first_token is None:
                reply.first_token = time.monotonic()
            reply.prompt_tokens += answer.exchange.prompt_tokens
            reply.completion_tokens += answer.exchange.completion_tokens
            reply.content = answer.content
            if not answer.tool_calls:
                break
            for call in answer.tool_calls:  # an id is how a result finds its call; not every server sends one
                call["id"] = call.get("id") or f"call_{new_object_id()}"
            reply.tool_calls += answer.tool_calls
            results = await run_tools(turn, answer.tool_calls, reply)
            if results is None:  # a call only the client can answer (a function tool): the turn ends here
                break
            messages.append({"role": "assistant", "content": answer.content or None, "tool_calls": answer.tool_calls})
            messages += results
    except ModelCallFailed as exc:
        await db_sync_to_async(record_failure)(turn, exc.message, reply)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        # Shielded: the write must happen although the task that ran the turn is being cancelled.
        await asyncio.shield(db_sync_to_async(record_failure)(turn, "the client went away before the answer", reply))
        raise
    yield await db_sync_to_async(record_reply)(turn, reply)


async def run_tools(turn: Turn, calls: list[dict[str, Any]], reply: Reply) -> list[dict[str, Any]] | None:
    """Run the `api` tools the model called; their results as `tool` messages. None when a call
    names a `function` tool (or no tool): its result must come from the client."""
    out = []
    waiting_for_client = False
    for call in calls:
        function = call.get("function") or {}
        tool = turn.tools.get(str(function.get("name")))
        if tool is None or tool.type != ToolType.API:
            waiting_for_client = True
            continue
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            result: Any = {"error": "the arguments are not a JSON object"}
            reply.calls_made.append(ToolCallMade(tool.tool_id, {}, None, result["error"], 0.0))
        else:
            outcome = await call_api_tool(tool.endpoint, arguments)
            result = {"error": outcome.error} if outcome.error else outcome.result
            reply.calls_made.append(
                ToolCallMade(tool.tool_id, arguments, outcome.result, outcome.error, outcome.latency)
            )
        reply.tool_results.append({"toolCallId": call.get("id", ""), "result": result})
        out.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": as_text(result)})
    return None if waiting_for_client else out


# --- after the call (sync, in a worker thread) ---


def _ms(since: float, until: float | None = None) -> float:
    return round(((until or time.monotonic()) - since) * 1000, 3)


def record_reply(turn: Turn, reply: Reply) -> Message:
    """The assistant's message, the agent's completed task and each tool call, in one transaction."""
    latency, response_time = _ms(turn.started, reply.first_token), _ms(turn.started)
    with transaction.atomic():
        message = message_create(
            data={
                "conversation_id": turn.conversation_id,
                "agent_id": turn.agent_id,
                "role": MessageRole.ASSISTANT,
                "content": reply.content,
                "tool_calls": reply.tool_calls,
                "tool_results": reply.tool_results,
                "usage": {
                    "promptTokens": reply.prompt_tokens,
                    "completionTokens": reply.completion_tokens,
                    "totalTokens": reply.prompt_tokens + reply.completion_tokens,
                },
                "latency": latency,
                "response_time": response_time,
            },
            actor=turn.actor,
        )
        agent_task_record(
            org_id=turn.actor.org_id,
            agent_id=turn.agent_id,
            succeeded=True,
            response_time=response_time,
            latency=latency,
        )
        _record_tool_calls(turn, reply)
    return message


def record_failure(turn: Turn, error: str, reply: Reply) -> None:
    """The error on the user's message (or the message the turn went on from), a failed task on the
    agent, the tool calls that were made."""
    with transaction.atomic():
        kept = turn.user_message or turn.continued
        assert kept is not None
        Message.objects.filter(pk=kept.pk).update(error=error[:10_000])
        agent_task_record(org_id=turn.actor.org_id, agent_id=turn.agent_id, succeeded=False, response_time=0, latency=0)
        _record_tool_calls(turn, reply)


def _record_tool_calls(turn: Turn, reply: Reply) -> None:
    for call in reply.calls_made:
        tool_call_record(
            org_id=turn.actor.org_id,
            tool_id=call.tool_id,
            agent_id=turn.agent_id,
            arguments=call.arguments,
            result=call.result,
            latency=call.latency,
            error=call.error,
        )
