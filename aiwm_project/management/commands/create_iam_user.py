"""Create (or update) a local IAM user for the embedded default's POST /auth/login."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aiwm_project.auth import KNOWN_ROLES
from aiwm_project.iam import local_user_upsert


class Command(BaseCommand):
    help = "Create or update a local IAM user (username, password, organization and roles)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--org-id", required=True)
        parser.add_argument("--roles", required=True, help=f"comma-separated: {', '.join(KNOWN_ROLES)}")
        parser.add_argument("--group-id", default="")

    def handle(self, *args: Any, **opts: Any) -> None:
        roles = [r.strip() for r in opts["roles"].split(",") if r.strip()]
        unknown = [r for r in roles if r not in KNOWN_ROLES]
        if unknown or not roles:
            raise CommandError(f"unknown roles {unknown}; choose from {', '.join(KNOWN_ROLES)}")
        identity, created = local_user_upsert(
            username=opts["username"],
            password=opts["password"],
            org_id=opts["org_id"],
            group_id=opts["group_id"],
            roles=roles,
        )
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} user {opts['username']} (id {identity.iam_user_id}, org {identity.org_id})")
