"""The dispatch benchmark's checks through the database: what the service stored and delivered."""

from __future__ import annotations

from typing import Any

from bench.dispatching.messages import COMMAND, STEPS
from bench.dispatching.scenarios import ScenarioResult


def check_database(
    dsn: str, results: list[ScenarioResult], by_step: dict[tuple[str, int], list[Any]], daemons: dict[str, Any]
) -> None:
    """What the service stored and delivered, per scenario (appended to each result's checks)."""
    import psycopg

    from executions.models import Execution
    from nodes.models import NodeCommand

    executions, commands = Execution._meta.db_table, NodeCommand._meta.db_table
    received_per_id: dict[str, int] = {}
    for record in daemons["records"]:
        received_per_id[record[0]] = received_per_id.get(record[0], 0) + 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        for r in results:
            ids = r.scenario.ids
            n = len(ids)
            statuses: dict[str, int] = dict(
                conn.execute(
                    f"SELECT status, count(*) FROM {executions} WHERE execution_id = ANY(%s) GROUP BY status",
                    [ids],
                ).fetchall()
            )
            steps = conn.execute(
                f"SELECT count(*) FILTER (WHERE s->>'status' = 'completed'), count(*) "
                f"FROM {executions} e, jsonb_array_elements(e.steps) s WHERE e.execution_id = ANY(%s)",
                [ids],
            ).fetchone()
            assert steps is not None
            r.steps_done = int(steps[0])
            rows = conn.execute(
                f"SELECT type, status, count(*), max(attempts), count(DISTINCT metadata->>'executionId' || ':' || "
                f"(metadata->>'stepIndex')) FROM {commands} WHERE metadata->>'executionId' = ANY(%s) GROUP BY 1, 2",
                [ids],
            ).fetchall()
            command_rows = {(row[0], row[1]): row for row in rows}
            ok_row = command_rows.get((COMMAND, "succeeded"))
            others = {f"{t}/{s}": row[2] for (t, s), row in command_rows.items() if (t, s) != (COMMAND, "succeeded")}
            stored = ok_row[2] if ok_row else 0
            wrong_node = sum(
                1
                for i in ids
                for k in range(STEPS)
                if (rec := by_step.get((i, k))) is not None and rec[3] != r.scenario.nodes[(i, k)]
            )
            mids = [by_step[(i, k)][0] for i in ids for k in range(STEPS) if (i, k) in by_step]
            r.checks = [
                (
                    f"executions completed {statuses.get('completed', 0)}/{n} {dict(statuses)}",
                    statuses.get("completed") == n,
                ),
                (f"steps completed {r.steps_done}/{STEPS * n}", r.steps_done == STEPS * n),
                (
                    f"commands stored and succeeded {stored}/{STEPS * n} (one per step: "
                    f"{ok_row[4] if ok_row else 0}), max attempts {ok_row[3] if ok_row else '-'}, other commands "
                    f"{others or 'none'}",
                    stored == STEPS * n
                    and ok_row is not None
                    and ok_row[4] == stored
                    and ok_row[3] == 1
                    and not others,
                ),
                (
                    f"commands received by the daemons {len(mids)}/{STEPS * n}, each once: "
                    f"{all(received_per_id.get(m) == 1 for m in mids)}, on the step's node: {wrong_node == 0}",
                    len(mids) == STEPS * n and all(received_per_id.get(m) == 1 for m in mids) and wrong_node == 0,
                ),
                (
                    f"start requests answered 200: {sum(1 for s in r.starts.values() if s[2] == 200)}/{n}",
                    all(s[2] == 200 for s in r.starts.values()) and len(r.starts) == n,
                ),
            ]
