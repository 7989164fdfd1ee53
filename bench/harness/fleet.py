"""The simulated fleet in the database: nodes seeded through the ORM, each with a node token issued
by the service itself, and deployments of models on them (Django set up against the benchmark's
template database)."""

from __future__ import annotations

import hashlib
from typing import Any

GPUS = [{"deviceId": "GPU-0", "model": "NVIDIA RTX 4090", "memoryTotal": 24576, "memoryFree": 24000}]


def org_id(index: int) -> str:
    return hashlib.md5(f"aiwm-swarm-org-{index}".encode()).hexdigest()[:24]


def seed_nodes(
    count: int, orgs: int, warmup: int = 0, sample: int = 0, warmup_org: str | None = None
) -> list[dict[str, Any]]:
    """`count` live nodes (`swarm-NNNNN`, then `warmup` more named `warmup-N`) over `orgs`
    organizations (Django set up against the template database), each with a fresh node token
    issued by the service's own `node_issue_token`. `sample` of them, evenly spread, are the timed
    ones: their nodeId ends in `-s` (what the swarm's database trigger, bench.swarm.run.NOTIFY_SQL, looks for).
    `warmup_org`: the warm-up's nodes in that organization instead (out of the measured ones' lists)."""
    step = max(1, count // sample) if sample else 0
    from django.db import connection

    from nodes.models import Node
    from nodes.services import node_issue_token

    nodes = [
        Node(
            owner_org_id=warmup_org if warmup_org is not None and i >= count else org_id(i % orgs),
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
            gpu_devices=GPUS,
            **Node.derived_fields({"gpu_devices": GPUS}),
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


def seed_deployments(org: str, node_ids: list[str], every: int = 10) -> int:
    """One running deployment per `every` nodes of `node_ids` (at least one), in organization
    `org`, each of a model of its own that its node holds; returns how many. What GET
    /api/deployments lists (every row populated with its model and its node)."""
    from django.db import connection

    from deployments.choices import DeploymentStatus
    from deployments.models import Deployment
    from models_registry.choices import ModelFramework, ModelStatus, ModelType
    from models_registry.models import AIModel

    owner = {"owner_org_id": org, "owner_user_id": "0" * 24, "created_by": "0" * 24, "updated_by": "0" * 24}
    hosts = node_ids[::every][: max(1, len(node_ids) // every)]
    models = [
        AIModel(
            **owner,
            model_id=f"swarm-model-{i:05d}",
            name=f"Llama 3.1 8B Instruct #{i}",
            version="3.1",
            type=ModelType.LLM,
            framework=ModelFramework.HUGGINGFACE,
            repository="meta-llama/Llama-3.1-8B-Instruct",
            file_size=16_060_000_000,
            is_downloaded=True,
            download_progress=100,
            status=ModelStatus.READY,
            node_id=node,
            tags=["llm", "bench"],
        )
        for i, node in enumerate(hosts)
    ]
    AIModel.objects.bulk_create(models, batch_size=500)
    Deployment.objects.bulk_create(
        [
            Deployment(
                **owner,
                deployment_id=f"swarm-deployment-{i:05d}",
                name=f"Chat API #{i}",
                status=DeploymentStatus.RUNNING,
                model_id=model.model_id,
                node_id=model.node_id or "",
                is_running=True,
                container_name=f"aiwm-deploy-{i:05d}",
                container_port=8000,
                endpoint=f"http://10.10.{i // 250}.{i % 250 + 1}:8000/v1",
                health_status="healthy",
            )
            for i, model in enumerate(models)
        ],
        batch_size=500,
    )
    with connection.cursor() as cursor:
        for table in (AIModel._meta.db_table, Deployment._meta.db_table):
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table)}")
    connection.close()
    return len(models)
