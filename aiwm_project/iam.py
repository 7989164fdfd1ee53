"""Local IAM users for the embedded default (the external IAM owns users in production)."""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction

from aiwm_project.auth import KNOWN_ROLES
from aiwm_project.exceptions import ConflictError, ValidationFailed
from aiwm_project.models import LocalIdentity

# Organization and group ids travel in tokens, URLs of the IAM and log lines: a safe charset.
IAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")


def iam_id_problem(name: str, value: str) -> str | None:
    """Why `value` is not an organization, group or user id, or None when it is one."""
    if IAM_ID.match(value):
        return None
    return f"{name}: must be 1-64 characters of letters, digits and . _ : @ - (starting alphanumeric)"


def roles_problem(roles: list[str]) -> str | None:
    """Why `roles` is not a role set a token may carry, or None when it is one."""
    unknown = [r for r in roles if r not in KNOWN_ROLES]
    if unknown or not roles:
        return f"roles: unknown {unknown or 'none given'}; choose from {', '.join(KNOWN_ROLES)}"
    return None


def local_user_problems(*, username: str, password: str, org_id: str, roles: list[str], group_id: str) -> list[str]:
    """Why these are not a local user's attributes (one line each), or [] when they are."""
    problems = [
        iam_id_problem("orgId", org_id),
        iam_id_problem("groupId", group_id) if group_id else None,
        roles_problem(roles),
        None if password else "password: must not be empty",
    ]
    try:
        if not username or len(username) > 150:
            raise ValidationError("must be 1-150 characters")
        UnicodeUsernameValidator()(username)
    except ValidationError as exc:
        problems.insert(0, f"username: {' '.join(exc.messages)}")
    return [p for p in problems if p]


def local_user_upsert(
    *,
    username: str,
    password: str,
    org_id: str,
    roles: list[str],
    group_id: str = "",
    force: bool = False,
    operator: bool = False,
) -> tuple[LocalIdentity, bool]:
    """Create the user, or reset its password (and, with `force`, its organization, group and roles).
    With `operator` the same account also logs in to the admin (staff and superuser: the admin is
    the installation's); without it an existing account keeps what it had.

    Refuses bad attributes (ValidationFailed) and, without `force`, moving an existing user to
    another organization, group or role set (ConflictError): a typo must not silently hand a user
    another tenant's data or an owner's rights.
    """
    problems = local_user_problems(username=username, password=password, org_id=org_id, roles=roles, group_id=group_id)
    if problems:
        raise ValidationFailed(problems)
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.select_for_update().get_or_create(username=username)
        current = LocalIdentity.objects.filter(user=user).first()
        if current is not None and not force:
            moved = (current.org_id, current.group_id, sorted(current.roles)) != (org_id, group_id, sorted(roles))
            if moved:
                raise ConflictError(
                    f"user {username!r} is in organization {current.org_id!r} with roles {current.roles}; "
                    "pass --force to move it or change its roles"
                )
        user.set_password(password)
        if operator:
            user.is_staff = user.is_superuser = True
        user.save()
        identity, _ = LocalIdentity.objects.update_or_create(
            user=user, defaults={"org_id": org_id, "group_id": group_id, "roles": roles}
        )
    return identity, created
