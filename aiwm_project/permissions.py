"""Role-based access: owners do everything, editors create/read/update, viewers read."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

ROLE_RIGHTS: dict[str, frozenset[str]] = {
    "universe.owner": frozenset({"read", "create", "update", "delete"}),
    "organization.owner": frozenset({"read", "create", "update", "delete"}),
    "organization.editor": frozenset({"read", "create", "update"}),
    "organization.viewer": frozenset({"read"}),
}
METHOD_RIGHT = {
    "GET": "read",
    "HEAD": "read",
    "OPTIONS": "read",
    "POST": "create",
    "PUT": "update",
    "PATCH": "update",
    "DELETE": "delete",
}


def rights_of(roles: tuple[str, ...] | list[str]) -> frozenset[str]:
    rights: set[str] = set()
    for role in roles:
        rights |= ROLE_RIGHTS.get(role, frozenset())
    return frozenset(rights)


def require_right(user: Any, right: str) -> None:
    if right not in rights_of(getattr(user, "roles", ())):
        raise exceptions.PermissionDenied(f"You do not have permission to {right}")


class RolePermission(permissions.BasePermission):
    """The right an endpoint needs is its HTTP method's, unless the action names one (`required_right`)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user:
            raise exceptions.NotAuthenticated()
        right = getattr(view, "required_right", None) or METHOD_RIGHT.get(request.method or "", "update")
        require_right(request.user, right)
        return True


class PublicEndpoint(permissions.BasePermission):
    """For the few endpoints that take no token (health, local login)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return True
