"""The dispatch benchmark's daemons, in their own processes (`python -m bench.dispatching.daemons
CONFIG.json`, started by bench.dispatching.topology): each connects to its web process, registers,
and on every command immediately emits `command.ack` then `command.result` success (the command's
metadata echoed), recording when it received the command and when it sent the result.

Commands from the benchmark: `go` (connect and register; answered `connected`), `stop` (disconnect;
answered `done` with the records).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from bench.dispatching.messages import COMMAND, answers
from bench.harness.daemon import (
    NAMESPACE,
    PHASE_TIMEOUT_S,
    DaemonStats,
    SimNode,
    bring_up,
    emit_line,
    expect_command,
    read_config,
    stdin_reader,
)


@dataclass
class DaemonState:
    # [messageId, executionId, stepIndex, nodeId, received, ack sent, result sent]
    records: list[list[Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    other_events: dict[str, int] = field(default_factory=dict)


class CommandDaemon(SimNode):
    """A simulated daemon (connect, connection.ack, register) that answers every command at once;
    `cfg["url"]` is the web process it stays on (sticky load balancing)."""

    def __init__(self, cfg: dict[str, Any], session: Any, stats: DaemonStats, state: DaemonState):
        super().__init__(cfg, session, stats)
        self.state = state
        self.client.on(COMMAND, self.on_command, namespace=NAMESPACE)
        self.client.on("*", self.on_other, namespace=NAMESPACE)

    async def on_command(self, command: Any = None) -> None:
        received = time.monotonic()
        if not isinstance(command, dict) or not isinstance(command.get("messageId"), str):
            self.state.other_events["malformed command"] = self.state.other_events.get("malformed command", 0) + 1
            return
        if command["messageId"] in self.state.seen:
            self.state.duplicates += 1  # a daemon recognises a repeat and does not run it again
            return
        self.state.seen.add(command["messageId"])
        ack, result = answers(command)
        client = self.client
        ack_sent = time.monotonic()
        await client.emit(ack["type"], ack, namespace=NAMESPACE)
        result_sent = time.monotonic()
        await client.emit(result["type"], result, namespace=NAMESPACE)
        metadata = command.get("metadata") or {}
        self.state.records.append(
            [
                command["messageId"],
                metadata.get("executionId"),
                metadata.get("stepIndex"),
                self.node_id,
                received,
                ack_sent,
                result_sent,
            ]
        )

    async def on_other(self, event: str, *args: Any) -> None:
        self.state.other_events[event] = self.state.other_events.get(event, 0) + 1


async def daemons(cfg: dict[str, Any]) -> None:
    import aiohttp

    reader = await stdin_reader()
    stats, state = DaemonStats(), DaemonState()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    nodes = [CommandDaemon(n, session, stats, state) for n in cfg["nodes"]]
    try:
        emit_line({"event": "prepared", "pid": os.getpid()})
        await expect_command(reader, "go", PHASE_TIMEOUT_S, "daemons")
        _, _, failures = await bring_up(nodes, cfg["concurrency"])
        emit_line({"event": "connected", "failures": failures})
        await expect_command(reader, "stop", cfg["max_seconds"], "daemons")
        await asyncio.wait_for(asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True), 60)
        emit_line(
            {
                "event": "done",
                "records": state.records,
                "duplicates": state.duplicates,
                "other_events": state.other_events,
                "errors": stats.errors,
                "disconnects": len(stats.disconnects),
            }
        )
    finally:
        await session.close()


if __name__ == "__main__":
    asyncio.run(daemons(read_config()))
