"""Create (or update) a local IAM user for the embedded default's POST /auth/login."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aiwm_project.auth import KNOWN_ROLES
from aiwm_project.exceptions import ServiceError
from aiwm_project.iam import local_user_upsert

PASSWORD_ENV = "AIWM_USER_PASSWORD"


class Command(BaseCommand):
    help = (
        "Create or update a local IAM user (username, password, organization and roles). The password "
        f"comes from --password-stdin, ${PASSWORD_ENV}, --password (visible to other users in the process "
        "list), or a prompt."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", default=None, help=f"prefer --password-stdin or ${PASSWORD_ENV}")
        parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        parser.add_argument("--org-id", required=True)
        parser.add_argument("--roles", required=True, help=f"comma-separated: {', '.join(KNOWN_ROLES)}")
        parser.add_argument("--group-id", default="")
        parser.add_argument(
            "--force", action="store_true", help="allow moving an existing user to another organization or roles"
        )
        parser.add_argument(
            "--admin",
            action="store_true",
            help="the same account also logs in to the admin at /admin (an operator of the installation)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        identity, created = _upsert(opts, self._password(opts))
        verb = "Created" if created else "Updated"
        where = "POST /auth/login and /admin" if opts["admin"] else "POST /auth/login"
        self.stdout.write(
            f"{verb} user {opts['username']} (id {identity.iam_user_id}, org {identity.org_id}); logs in at {where}"
        )

    def _password(self, opts: dict[str, Any]) -> str:
        if opts["password_stdin"]:
            return sys.stdin.readline().rstrip("\n")
        if opts["password"] is not None:
            return str(opts["password"])
        if os.environ.get(PASSWORD_ENV):
            return os.environ[PASSWORD_ENV]
        if not sys.stdin.isatty():
            raise CommandError(f"no password: use --password-stdin, ${PASSWORD_ENV} or --password")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("the passwords do not match")
        return first


def _upsert(opts: dict[str, Any], password: str) -> Any:
    try:
        return local_user_upsert(
            username=opts["username"],
            password=password,
            org_id=opts["org_id"],
            group_id=opts["group_id"],
            roles=[r.strip() for r in opts["roles"].split(",") if r.strip()],
            force=opts["force"],
            operator=opts["admin"],
        )
    except ServiceError as exc:
        raise CommandError(" ".join([exc.message, *exc.errors])) from exc
