"""Print a node token for a node's daemon (revoking the node's previous token), and nothing else."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aiwm_project.selectors import find_by_identifier
from nodes.models import Node
from nodes.services import node_issue_token


class Command(BaseCommand):
    help = "Issue the token a node's daemon connects with: issue_node_token NODE_ID --org-id ORG."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("node", help="the node's nodeId or _id")
        parser.add_argument("--org-id", required=True)

    def handle(self, *args: Any, **opts: Any) -> None:
        node = find_by_identifier(Node.objects.for_org(opts["org_id"]), opts["node"])
        if node is None:
            raise CommandError(f"node {opts['node']!r} not found in organization {opts['org_id']!r}")
        token, _ = node_issue_token(node=node, actor_id="cli")
        self.stdout.write(token)
