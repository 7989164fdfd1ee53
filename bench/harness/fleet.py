"""The simulated fleet in the database: nodes seeded through the ORM, each with a node token issued
by the service itself (Django set up against the benchmark's template database)."""

from __future__ import annotations

import hashlib
from typing import Any


def org_id(index: int) -> str:
    return hashlib.md5(f"aiwm-swarm-org-{index}".encode()).hexdigest()[:24]


def seed_nodes(count: int, orgs: int, warmup: int = 0, sample: int = 0) -> list[dict[str, Any]]:
    """`count` live nodes (`swarm-NNNNN`, then `warmup` more named `warmup-N`) over `orgs`
    organizations (Django set up against the template database), each with a fresh node token
    issued by the service's own `node_issue_token`. `sample` of them, evenly spread, are the timed
    ones: their nodeId ends in `-s` (what the swarm's database trigger, bench.swarm.run.NOTIFY_SQL, looks for)."""
    step = max(1, count // sample) if sample else 0
    from django.db import connection

    from nodes.models import Node
    from nodes.services import node_issue_token

    nodes = [
        Node(
            owner_org_id=org_id(i % orgs),
            owner_user_id="0" * 24,
            created_by="0" * 24,
            updated_by="0" * 24,
            node_id=(f"swarm-{i:05d}" + ("-s" if step and i % step == 0 and i // step < sample else ""))
            if i < count
            else f"warmup-{i - count}",
            name=f"Swarm node {i}",
            role=["worker"],
            cpu_cores=16,
            ram_total=65536,
            ram_free=32768,
            gpu_devices=[{"deviceId": "GPU-0", "model": "NVIDIA RTX 4090", "memoryTotal": 24576, "memoryFree": 24000}],
        )
        for i in range(count + warmup)
    ]
    Node.objects.bulk_create(nodes, batch_size=500)
    out = []
    for node in nodes:
        token, _ = node_issue_token(node=node, actor_id="bench")
        out.append({"pk": node.pk, "nodeId": node.node_id, "token": token, "sampled": node.node_id.endswith("-s")})
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE nodes_node")
    connection.close()
    return out
