"""The agent's durable memory, one SQLite file in its data dir: the outbox of messages that must
reach the control plane, and the commands it has taken on (so a command re-sent with the same
`messageId` is answered from here, never run twice)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS commands (
    message_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,          -- running | done
    result TEXT,                  -- the command.result data once done
    received_at REAL NOT NULL,
    finished_at REAL
);
"""
# Finished commands are remembered this long: the control plane re-sends an unacknowledged
# command for far less (its outbox timeout), so an older repeat cannot happen.
COMMANDS_KEPT_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Queued:
    seq: int
    message_id: str
    type: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Command:
    message_id: str
    type: str
    body: dict[str, Any]
    state: str
    result: dict[str, Any] | None


class Store:
    """Thread-safe (one connection, one lock): the event loop calls it directly — each call is one
    short transaction on a local file (WAL, synchronous=NORMAL: an acknowledged write survives a
    crash of the agent; a power loss may lose the last few, which the control plane's own outbox
    then re-sends)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- The outbox: acks, results, deployment status and logs, in the order they were put.

    def put(self, body: dict[str, Any]) -> bool:
        """Queue an envelope; False when one with its messageId is already queued (a repeat)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (message_id, type, body, created_at) VALUES (?, ?, ?, ?)",
                (body["messageId"], body["type"], json.dumps(body), time.time()),
            )
            return cursor.rowcount == 1

    def queued(self, limit: int = 100) -> list[Queued]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, message_id, type, body FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Queued(seq, message_id, type_, json.loads(body)) for seq, message_id, type_, body in rows]

    def sent(self, message_id: str) -> None:
        """The control plane has applied it (its Socket.IO acknowledgement came back)."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))

    def attempted(self, message_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE message_id = ?", (message_id,))

    def outbox_depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    # --- Commands taken on.

    def take_command(self, body: dict[str, Any]) -> Command | None:
        """Record a command as running; None when it is new, else what is known of it (a repeat)."""
        with self._lock:
            row = self._db.execute(
                "SELECT message_id, type, body, state, result FROM commands WHERE message_id = ?",
                (body["messageId"],),
            ).fetchone()
            if row is not None:
                return _command(row)
            self._db.execute(
                "INSERT INTO commands (message_id, type, body, state, received_at) VALUES (?, ?, ?, 'running', ?)",
                (body["messageId"], body["type"], json.dumps(body), time.time()),
            )
            return None

    def finish_command(self, message_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE commands SET state = 'done', result = ?, finished_at = ? WHERE message_id = ?",
                (json.dumps(result), time.time(), message_id),
            )

    def running_commands(self) -> list[Command]:
        """Commands the agent took on and did not finish (it was stopped or killed meanwhile)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT message_id, type, body, state, result FROM commands WHERE state = 'running' "
                "ORDER BY received_at"
            ).fetchall()
        return [_command(row) for row in rows]

    def forget_old_commands(self, now: float | None = None) -> int:
        cutoff = (now or time.time()) - COMMANDS_KEPT_SECONDS
        with self._lock:
            cursor = self._db.execute("DELETE FROM commands WHERE state = 'done' AND finished_at < ?", (cutoff,))
            return cursor.rowcount

    def command_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM commands GROUP BY state").fetchall()
        return {state: int(count) for state, count in rows}


def _command(row: tuple[str, str, str, str, str | None]) -> Command:
    message_id, type_, body, state, result = row
    return Command(message_id, type_, json.loads(body), state, json.loads(result) if result else None)
