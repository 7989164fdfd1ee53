"""The execution engine under faults, with real parts: concurrent transactions, Celery, killed processes.

Six scenarios, all on PostgreSQL (row locks, SKIP LOCKED and truly concurrent transactions are what
is under test; the SQLite run skips them):

1. The same `command.result` applied twice at once (two threads, two database connections, as two
   web processes would): the step completes once, its messageId is recorded once, and the next
   step's command is created once. Through the protocol's entry (`apply_message`: ledger + CAS)
   and through the engine's service alone (`execution_apply_result`: the locks and the CAS only).
2. A cancel racing the final step's result: the run ends either completed (the cancel is a 409,
   nothing sent to the node) or cancelled (the result is ignored, the node gets `command.cancel`),
   never a mix of both.
3. A step whose node never answers is timed out (STEP_TIMEOUT) by a real Celery beat + worker
   running the sweep every second: nothing in the test process sweeps.
4. A process that dies (`os._exit`) right after committing a dispatch, before the command reached
   the node: the sweep in a real Celery worker delivers it, and the daemon gets it exactly once.
   Two crash points: before the delivery CAS (left `queued`: recovered 5 s later) and after it
   (left `sent`, never published: recovered by the unacknowledged re-send).
5. The web process holding the daemon's socket is killed -9 while the daemon holds an
   unacknowledged command: after a restart the daemon reconnects, finds the same command (same
   messageId) in `register.ack`'s pendingCommands, answers it, and the execution completes.
6. A cancel racing a delivery of its step's command (a register's pendingCommands, the sweep,
   another process's on-commit hook) still tells the node, which was just handed the command,
   to cancel it (`command_withdraw` decides under the command's row lock).

How races are made certain rather than likely: threads start behind a `threading.Barrier`; in
"held" rounds the test's own transaction also holds the execution's row lock until every thread
is blocked on a lock (seen in pg_stat_activity), then lets go, so all calls are in flight at once.
"Ordered" rounds start the threads one after another, each waiting before the next starts:
PostgreSQL grants a row lock to its waiters in the order they queued, so each outcome of a race
is exercised on purpose and then checked against the same invariants as the free-for-all rounds.

Child processes (web processes as `manage.py serve` runs them, a Celery worker and beat, `manage.py shell`) use the
helpers of tests/support/processes.py against the test's PostgreSQL database (committed data:
`transaction=True`) and the suite's Redis test database.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection, transaction

from aiwm_project.exceptions import ConflictError
from executions.engine import execution_apply_result, execution_cancel, execution_start
from executions.models import Execution
from gateway.identity import NodeIdentity
from gateway.protocol import Connection, apply_message
from nodes.commands import commands_pending_for
from nodes.models import InboundMessage, Node, NodeCommand
from tests.support.daemons import Daemon, message
from tests.support.executions import NODE, cancels_for, chain, fresh, mark_sent, step
from tests.support.factories import ExecutionFactory, NodeFactory
from tests.support.live_server import eventually, free_port
from tests.support.personas import ORG_A, OWNER_A
from tests.support.processes import (
    STARTUP_SECONDS,
    SWEEP_SECONDS,
    Processes,
    make_stale,
    post_json,
    run_shell,
    user_token,
    wait_offline,
)

ROUNDS = 6
THREAD_SECONDS = 30  # a thread blocked longer than this is a deadlock, not a slow machine
LOCK_WAIT_SECONDS = 20
DELIVERY_SECONDS = 15
# How long "nothing more arrives" is watched: several beat ticks (1 s each).
QUIET_SECONDS = 6
REASON = "Operator pulled the plug"


# --- concurrency helpers --------------------------------------------------------------------------


def lock_waiters() -> int:
    """Backends of this database (other than ours) currently waiting for a heavyweight lock."""
    with connection.cursor() as cursor:
        # Activity is read through a snapshot kept for the rest of the transaction: drop it first.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def wait_for_lock_waiters(count: int) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while lock_waiters() < count:
        assert time.monotonic() < deadline, f"{count} threads never all waited on a lock ({lock_waiters()} did)"
        time.sleep(0.01)


def race(
    calls: dict[str, Callable[[], Any]], *, hold: Execution | None = None, ordered: bool = False
) -> dict[str, Any]:
    """Run each call in a thread of its own (its own database connection), at the same time.

    Returns what each call returned, or the exception it raised. `hold`: the test's transaction
    keeps that execution's row lock until every thread is blocked on a lock, so they are all
    mid-transaction together. `ordered` (with `hold`): threads are started one by one, each
    blocked before the next starts, so they get the lock in the order of `calls`.
    """
    assert hold is not None or not ordered
    names = list(calls)
    outcomes: dict[str, Any] = {}
    barrier = threading.Barrier(1 if ordered else len(names))

    def run(name: str) -> None:
        try:
            barrier.wait(THREAD_SECONDS)
            outcomes[name] = calls[name]()
        except Exception as exc:  # the outcome under test: a 409 is a legitimate answer to a race
            outcomes[name] = exc
        finally:
            connection.close()  # this thread's connection, or the test database cannot be dropped

    threads = [threading.Thread(target=run, args=(name,), name=f"race-{name}", daemon=True) for name in names]
    try:
        if hold is None:
            for thread in threads:
                thread.start()
        else:
            with transaction.atomic():
                Execution.objects.select_for_update().get(pk=hold.pk)
                for number, thread in enumerate(threads, 1):
                    thread.start()
                    if ordered:
                        wait_for_lock_waiters(number)
                wait_for_lock_waiters(len(threads))
            # Leaving the block commits and releases the lock: the waiters go, in queue order.
    finally:
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(THREAD_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a racing call never finished (deadlock?)"
    assert set(outcomes) == set(names), outcomes
    return outcomes


def node_connection(node: Node, name: str) -> Connection:
    """What the gateway builds for an authenticated daemon socket (one per web process here)."""
    identity = NodeIdentity(org_id=ORG_A, node_pk=node.pk, node_id=NODE, via="node-token")
    return Connection(identity=identity, connection_id=f"conn-{name}-{uuid.uuid4().hex[:8]}")


def success_for(execution: Execution, index: int) -> dict[str, Any]:
    """The node's final `command.result` for a step's current command (a validated envelope)."""
    sent = fresh(execution).steps[index]["sentMessageId"]
    data = {"originalMessageId": sent, "status": "success", "progress": 100, "result": {"path": f"/m/{index}"}}
    return message("command.result", data, metadata={"executionId": execution.execution_id, "stepIndex": index})


def step_commands(execution: Execution, index: int) -> list[NodeCommand]:
    return list(
        NodeCommand.objects.filter(
            metadata__executionId=execution.execution_id, metadata__stepIndex=index, type="model.download"
        )
    )


@pytest.fixture
def node(transactional_db: None) -> Node:
    return NodeFactory.create(node_id=NODE)


# --- 1. the same result twice, at once -----------------------------------------------------------


@pytest.mark.parametrize("entry", ["apply_message", "execution_apply_result"])
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_result_delivered_twice_at_once_counts_once(node: Node, entry: str) -> None:
    for round_ in range(ROUNDS):
        execution = chain(2)
        execution_start(pk=execution.pk, actor=OWNER_A)
        first = fresh(execution).steps[0]["sentMessageId"]
        body = success_for(execution, 0)

        def deliver(copy: str, body: dict[str, Any] = body) -> Any:
            if entry == "apply_message":  # what a transport calls: ledger row, then the CAS
                return apply_message(node_connection(node, copy), body)
            return execution_apply_result(  # the engine's service alone: only the locks and the CAS guard it
                org_id=ORG_A,
                node_id=NODE,
                message_id=body["messageId"],
                data=body["data"],
            )

        held = round_ % 2 == 1  # odd rounds: both copies provably inside their transactions at once
        outcomes = race({"a": partial(deliver, "a"), "b": partial(deliver, "b")}, hold=execution if held else None)

        where = f"round {round_} (held={held})"
        for outcome in outcomes.values():  # neither copy is an error: the loser is a quiet no-op
            if entry == "apply_message":
                assert outcome == [], (where, outcome)
            else:
                assert isinstance(outcome, NodeCommand) and outcome.status == "succeeded", (where, outcome)
        after = fresh(execution)
        assert after.status == "running", where
        assert after.steps[0]["status"] == "completed" and after.steps[0]["receivedMessageId"] == body["messageId"]
        assert after.steps[0]["result"] == {"path": "/m/0"}
        assert after.received_message_ids == [body["messageId"]], where  # once, not twice
        (second,) = step_commands(execution, 1)  # the next step's command: created exactly once
        assert after.steps[1]["status"] == "running" and after.steps[1]["sentMessageId"] == second.message_id
        assert after.sent_message_ids == [first, second.message_id], where
        assert NodeCommand.objects.get(message_id=first).status == "succeeded"
        if entry == "apply_message":
            assert InboundMessage.objects.filter(message_id=body["messageId"]).count() == 1


# --- 2. cancel racing the final result -------------------------------------------------------------


@pytest.mark.parametrize("order", ["cancel-first", "result-first", "at-once"])
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_cancel_racing_the_final_result_applies_one_or_the_other(node: Node, order: str) -> None:
    seen: list[str] = []
    for round_ in range(ROUNDS):
        execution = chain(2)
        execution_start(pk=execution.pk, actor=OWNER_A)
        assert apply_message(node_connection(node, "first"), success_for(execution, 0)) == []
        mark_sent(execution, 1)  # the node holds the final command: a cancel must tell it to stop
        final = fresh(execution).steps[1]["sentMessageId"]
        body = success_for(execution, 1)
        cancel = partial(execution_cancel, pk=execution.pk, reason=REASON, actor=OWNER_A)
        result = partial(apply_message, node_connection(node, "final"), body)
        calls: dict[str, Callable[[], Any]] = {"cancel": cancel, "result": result}
        if order == "result-first":
            calls = {"result": result, "cancel": cancel}
        # at-once: no held lock, only the barrier: the order is whatever the machine makes of it.
        held = execution if order != "at-once" else None
        outcomes = race(calls, hold=held, ordered=held is not None)

        where = f"{order} round {round_}: {outcomes}"
        after = fresh(execution)
        command = NodeCommand.objects.get(message_id=final)
        assert outcomes["result"] == [], where  # the message is accepted either way (ledger), never an error
        assert after.steps[0]["status"] == "completed" and after.completed_at is not None
        if after.status == "completed":
            assert isinstance(outcomes["cancel"], ConflictError), where  # 409: it had already finished
            assert after.error is None and after.progress == 100, where
            assert after.next_check_at is None, where  # nothing left for the sweep
            assert [s["status"] for s in after.steps] == ["completed", "completed"], where
            assert after.result == {"steps": {"0": {"path": "/m/0"}, "1": {"path": "/m/1"}}}, where
            assert command.status == "succeeded", where
            assert cancels_for(final) == [], where  # no command.cancel for a finished run
            assert body["messageId"] in after.received_message_ids, where
        else:
            assert after.status == "cancelled", where
            assert isinstance(outcomes["cancel"], Execution) and outcomes["cancel"].status == "cancelled", where
            assert after.error == {"code": "USER_CANCELLED", "message": REASON}, where
            assert [s["status"] for s in after.steps] == ["completed", "failed"], where
            assert after.steps[1]["error"]["code"] == "CANCELLED", where
            assert after.result is None and after.progress == 50, where
            assert command.status == "cancelled" and command.result is None, where  # the late result: ignored
            (cancel_command,) = cancels_for(final)  # the node is told once to stop it
            assert cancel_command.data == {"originalMessageId": final, "reason": f"execution cancelled: {REASON}"}
            assert body["messageId"] not in after.received_message_ids, where
        seen.append(after.status)
    if order == "cancel-first":
        assert set(seen) == {"cancelled"}, seen  # the cancel held the lock first: the result came too late
    elif order == "result-first":
        assert set(seen) == {"completed"}, seen


# --- child processes: web, Celery worker, beat, shells ---------------------------------------------


@pytest.fixture
def cluster(processes: Processes) -> Processes:
    """Child processes sharing the test's database and Redis database 14, stopped at the end:
    tests/support/processes.py's set-up (the same secrets, an own pub/sub channel, no in-process sweep)."""
    return processes


def start_web(cluster: Processes, name: str, port: int) -> None:
    cluster.start(name, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port))
    cluster.wait_healthy(name, port)


def start_sweepers(cluster: Processes, tmp_path: Path, **env: str) -> None:
    """A Celery worker (Redis broker, not eager) and one beat scheduling the sweep every second."""
    cluster.start(
        "celery-worker", *("-m", "celery", "-A", "aiwm_project", "worker", "--pool", "solo", "-l", "warning"), **env
    )
    cluster.start(
        "celery-beat",
        *("-m", "celery", "-A", "aiwm_project", "beat", "-l", "warning"),
        *("--schedule", str(tmp_path / "beat-schedule")),
        AIWM_SWEEP_INTERVAL_SECONDS="1",
        **env,
    )


def with_logs(cluster: Processes, scenario: Callable[[], None]) -> None:
    """Run the scenario; on failure, the children's logs go with the assertion."""
    try:
        scenario()
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\n\n{cluster.logs()}") from exc


async def nothing_more(daemon: Daemon, seconds: float = QUIET_SECONDS) -> None:
    """Watch the daemon's socket for a while: no further event may arrive."""
    await asyncio.sleep(seconds)
    assert daemon.received.empty(), [daemon.received.get_nowait() for _ in range(daemon.received.qsize())]


async def db(function: Callable[[], Any]) -> Any:
    """The ORM from inside a scenario: on the test's thread, with the test's connection."""
    return await sync_to_async(function)()


# --- 3. beat times out a silent step ---------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_celery_beat_times_out_a_step_whose_node_never_answers(node: Node, cluster: Processes, tmp_path: Path) -> None:
    witness = NodeFactory.create(node_id="node-beat-witness")
    make_stale(witness)
    # Step 0 times out after 2 s; step 1 waits on it and must never be dispatched.
    execution = ExecutionFactory.create(steps=[step(0, timeoutSeconds=2), step(1, [0])], timeout_seconds=3600)

    def scenario() -> None:
        start_sweepers(cluster, tmp_path)
        # Worker and beat are up once their sweep has marked the stale witness offline.
        assert wait_offline(witness), "the beat's sweep never ran"
        started = execution_start(pk=execution.pk, actor=OWNER_A)
        assert started.started_at is not None
        deadline = started.started_at + timedelta(seconds=2)
        command = step_commands(execution, 0)[0]
        assert command.status == "queued"  # the node is not connected: it never answers
        assert eventually(lambda: fresh(execution).status != "running", SWEEP_SECONDS), "no sweep timed it out"

        after = fresh(execution)
        assert after.status == "timeout"
        assert after.error == {
            "code": "STEP_TIMEOUT",
            "message": "Step 0 did not finish within 2 seconds",
            "nodeId": NODE,
            "stepIndex": 0,
        }
        assert after.completed_at is not None and after.completed_at >= deadline  # not before its deadline
        assert [s["status"] for s in after.steps] == ["failed", "pending"]  # the dependent never ran
        assert after.steps[0]["error"]["code"] == "STEP_TIMEOUT"
        assert after.next_check_at is None
        command.refresh_from_db()
        assert command.status == "expired"  # a late answer to it changes nothing
        assert cancels_for(command.message_id) == []  # it never reached the node: withdrawn silently
        assert step_commands(execution, 1) == []

    with_logs(cluster, scenario)


# --- 4. a process killed mid-dispatch ----------------------------------------------------------------

# Where the starting process dies, after its transaction committed:
#   on-commit-hook: the outbox's after-commit hook (`deliver_command`) never runs: the command
#     stays `queued`; the sweep's queued pass delivers it once the 5 s grace has passed.
#   deliver-to-node: the hook's CAS marked it `sent` (attempts 1), then the process died before
#     publishing it: only the unacknowledged re-send (AIWM_COMMAND_ACK_TIMEOUT_SECONDS) recovers it.
CRASH_POINTS = {
    "on-commit-hook": ("nodes.commands", "deliver_command"),
    "deliver-to-node": ("aiwm_project.node_bus", "publish"),
}


def start_and_crash(cluster: Processes, execution: Execution, crash_point: str) -> None:
    """`execution_start` in another process, which dies (exit 9, no cleanup) at the crash point."""
    module, name = CRASH_POINTS[crash_point]
    code = "\n".join(
        [
            "import os",
            f"import {module} as target",
            f"target.{name} = lambda *args, **kwargs: os._exit(9)",
            "from aiwm_project.auth import Principal",
            "from executions.engine import execution_start",
            f"actor = Principal(user_id='u-crash', org_id={ORG_A!r}, roles=('organization.owner',))",
            f"execution_start(pk={execution.pk!r}, actor=actor)",
            "print('survived the crash point')",
        ]
    )
    done = run_shell(cluster, code, timeout=120)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 9 and "survived" not in output, f"exit {done.returncode}:\n{output}"


@pytest.mark.parametrize("crash_point", list(CRASH_POINTS))
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_process_killed_mid_dispatch_is_recovered_by_the_sweep_exactly_once(
    cluster: Processes, tmp_path: Path, crash_point: str
) -> None:
    _, token = NodeFactory.with_token(node_id=NODE)
    execution = ExecutionFactory.create(steps=[step(0)])
    port = free_port()
    # Left `sent`, the command waits for the ack timeout: short here, 60 s by default.
    sweeper_env = {"AIWM_COMMAND_ACK_TIMEOUT_SECONDS": "3"} if crash_point == "deliver-to-node" else {}

    async def scenario() -> tuple[str, dict[str, Any]]:
        daemon = Daemon()
        await daemon.connect(f"http://127.0.0.1:{port}", {"token": token})
        try:
            await daemon.expect("connection.ack", DELIVERY_SECONDS)
            assert (await daemon.register())["pendingCommands"] == []  # connected and registered on A

            await asyncio.to_thread(start_and_crash, cluster, execution, crash_point)
            started = await db(partial(fresh, execution))
            assert started.status == "running"  # the transition committed before the crash
            message_id = started.steps[0]["sentMessageId"]
            stored = await db(partial(NodeCommand.objects.get, message_id=message_id))
            if crash_point == "on-commit-hook":
                assert (stored.status, stored.attempts, stored.sent_at) == ("queued", 0, None)
            else:
                assert (stored.status, stored.attempts) == ("sent", 1) and stored.sent_at is not None
            await nothing_more(daemon, 2)  # the dead process delivered nothing, and nobody else did yet

            await asyncio.to_thread(start_sweepers, cluster, tmp_path, **sweeper_env)
            delivered = await daemon.expect("model.download", SWEEP_SECONDS)
            assert delivered["messageId"] == message_id, delivered
            assert delivered["metadata"]["executionId"] == execution.execution_id
            if crash_point == "deliver-to-node":
                # Acknowledge it, as a daemon does: otherwise every 3 s is a legitimate re-send.
                await daemon.send(message("command.ack", {"originalMessageId": message_id}))
            await nothing_more(daemon)  # several sweeps later: still that one copy
            return message_id, delivered
        finally:
            await daemon.client.disconnect()

    def run() -> None:
        start_web(cluster, "web-A", port)
        message_id, _ = async_to_sync(asyncio.wait_for)(scenario(), 300)
        command = NodeCommand.objects.get(message_id=message_id)
        if crash_point == "on-commit-hook":
            # Unacknowledged (60 s ack timeout): sent by the queued pass, and by nothing else.
            assert (command.status, command.attempts) == ("sent", 1)
        else:
            assert (command.status, command.attempts) == ("acknowledged", 2)  # the crashed send + the re-send
        assert fresh(execution).steps[0]["status"] == "running"

    with_logs(cluster, run)


# --- 5. the web process restarts mid-execution ---------------------------------------------------


class ReconnectingDaemon(Daemon):
    """A daemon that reconnects by itself when the server goes away, as the real node daemon does."""

    def __init__(self) -> None:
        super().__init__()
        # Read by socketio.AsyncClient on each lost connection; short delays keep the test quick.
        self.client.reconnection = True
        self.client.reconnection_delay = 0.5
        self.client.reconnection_delay_max = 2


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_command_outlives_a_killed_web_process_and_the_execution_completes(cluster: Processes) -> None:
    _, token = NodeFactory.with_token(node_id=NODE)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    definition = {
        "name": "Download",
        "category": "model",
        "type": "download-model",
        "nodeId": NODE,
        "steps": [
            {
                "index": 0,
                "name": "Download",
                "command": {"type": "model.download", "resource": {"type": "model", "id": "m-restart"}},
                "timeoutSeconds": 600,
            }
        ],
    }

    async def scenario() -> tuple[str, dict[str, Any], dict[str, Any]]:
        daemon = ReconnectingDaemon()
        await daemon.connect(base, {"token": token})
        try:
            await daemon.expect("connection.ack", DELIVERY_SECONDS)
            assert (await daemon.register())["pendingCommands"] == []
            status, created = await asyncio.to_thread(post_json, f"{base}/api/executions", definition, user_token())
            assert status == 201, created
            execution_id = created["executionId"]
            status, started = await asyncio.to_thread(
                post_json, f"{base}/api/executions/{execution_id}/start", {}, user_token()
            )
            assert status == 200 and started["status"] == "running", started
            first = await daemon.expect("model.download", DELIVERY_SECONDS)
            assert first["messageId"] == started["steps"][0]["sentMessageId"]
            # Received, not acknowledged: the server cannot know the node has it.

            web_a, _ = cluster.children["web-A"]
            web_a.kill()  # SIGKILL: no shutdown, no disconnect handler, sockets torn down by the kernel
            await asyncio.to_thread(web_a.wait, 10)
            await daemon.wait_disconnected(DELIVERY_SECONDS)
            await asyncio.to_thread(start_web, cluster, "web-A-restarted", port)

            await daemon.expect("connection.ack", STARTUP_SECONDS)  # it came back on its own
            pending = (await daemon.register())["pendingCommands"]
            assert [p["messageId"] for p in pending] == [first["messageId"]], pending
            again = pending[0]
            assert {k: v for k, v in again.items() if k != "timestamp"} == {
                k: v for k, v in first.items() if k != "timestamp"
            }  # the same command; only its send time is new

            ack = message("command.ack", {"originalMessageId": again["messageId"]}, metadata=again["metadata"])
            await daemon.send(ack)
            data = {"originalMessageId": again["messageId"], "status": "success", "result": {"path": "/m/r"}}
            answer = await daemon.send(message("command.result", data, metadata=again["metadata"]))
            done = await db(
                partial(
                    eventually,
                    lambda: Execution.objects.filter(execution_id=execution_id, status="completed").first(),
                    DELIVERY_SECONDS,
                )
            )
            assert done is not None, "the execution did not complete after the answer"
            await nothing_more(daemon, 1)  # no second copy of the command after the register
            return execution_id, ack, answer
        finally:
            await daemon.client.disconnect()

    def run() -> None:
        start_web(cluster, "web-A", port)
        execution_id, _, answer = async_to_sync(asyncio.wait_for)(scenario(), 300)
        execution = Execution.objects.get(execution_id=execution_id)
        assert (execution.status, execution.progress, execution.error) == ("completed", 100, None)
        assert execution.steps[0]["status"] == "completed" and execution.steps[0]["result"] == {"path": "/m/r"}
        assert execution.result == {"steps": {"0": {"path": "/m/r"}}}
        assert execution.received_message_ids == [answer["messageId"]]
        command = NodeCommand.objects.get(message_id=execution.steps[0]["sentMessageId"])
        assert (command.status, command.attempts) == ("succeeded", 2)  # delivered, then re-sent on register

    with_logs(cluster, run)


# --- 6. a cancel racing a delivery ---------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_cancel_racing_a_delivery_still_tells_the_node(node: Node) -> None:
    execution = ExecutionFactory.create(steps=[step(0)])
    execution_start(pk=execution.pk, actor=OWNER_A)
    (command,) = step_commands(execution, 0)
    assert command.status == "queued"  # the node was offline

    outcome: dict[str, Any] = {}

    def cancel() -> None:
        try:
            outcome["cancel"] = execution_cancel(pk=execution.pk, reason=REASON, actor=OWNER_A)
        finally:
            connection.close()

    # The node registers (the real service: SELECT FOR UPDATE, queued -> sent, into register.ack)
    # while a user cancels: the register's transaction is held open until the cancel, having read
    # the command as `queued`, waits on its row lock for the CAS.
    canceller = threading.Thread(target=cancel, name="cancel", daemon=True)
    with transaction.atomic():
        pending = commands_pending_for(org_id=ORG_A, node_id=NODE)
        assert [p["messageId"] for p in pending] == [command.message_id]  # the node is handed the command
        canceller.start()
        wait_for_lock_waiters(1)
    canceller.join(THREAD_SECONDS)
    assert not canceller.is_alive()
    assert isinstance(outcome.get("cancel"), Execution), outcome
    command.refresh_from_db()
    assert command.status == "cancelled"
    # The node has the command (it came in register.ack): it must be told to stop it.
    assert len(cancels_for(command.message_id)) == 1
