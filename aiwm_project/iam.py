"""Local IAM users for the embedded default (the external IAM owns users in production)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from aiwm_project.models import LocalIdentity


def local_user_upsert(
    *, username: str, password: str, org_id: str, roles: list[str], group_id: str = ""
) -> tuple[LocalIdentity, bool]:
    """Create the user, or reset its password, organization and roles."""
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(username=username)
        user.set_password(password)
        user.save()
        identity, _ = LocalIdentity.objects.update_or_create(
            user=user, defaults={"org_id": org_id, "group_id": group_id, "roles": roles}
        )
    return identity, created
