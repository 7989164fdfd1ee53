"""Print a signed user token (HS256 with IAM_JWT_SECRET), and nothing else."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aiwm_project.auth import TokenError, issue_user_token
from aiwm_project.iam import iam_id_problem, roles_problem


class Command(BaseCommand):
    help = "Print a user JWT for scripts and tests: --username U --user-id ID --org-id O --roles R[,R]."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--user-id", required=True)
        parser.add_argument("--org-id", required=True)
        parser.add_argument("--roles", required=True)
        parser.add_argument("--group-id", default="")
        parser.add_argument("--expires-in", type=int, default=None, help="seconds (default AIWM_TOKEN_TTL_SECONDS)")

    def handle(self, *args: Any, **opts: Any) -> None:
        roles = [r.strip() for r in opts["roles"].split(",") if r.strip()]
        problems = [
            "username: must not be empty" if not opts["username"].strip() else None,
            iam_id_problem("userId", opts["user_id"]),
            iam_id_problem("orgId", opts["org_id"]),
            iam_id_problem("groupId", opts["group_id"]) if opts["group_id"] else None,
            roles_problem(roles),
        ]
        if any(problems):
            raise CommandError("; ".join(p for p in problems if p))
        if opts["expires_in"] is not None and opts["expires_in"] <= 0:
            raise CommandError("--expires-in must be a positive number of seconds")
        try:
            token = issue_user_token(
                user_id=opts["user_id"],
                username=opts["username"],
                org_id=opts["org_id"],
                group_id=opts["group_id"],
                roles=roles,
                expires_in=opts["expires_in"],
            )
        except TokenError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(token)
