"""Who a node connection speaks for: its node token (issued by `nodes.services.node_issue_token`)
or a user token with write rights naming its node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from django.db.models import Q

from aiwm_project.auth import TokenError, authenticate_user_token
from aiwm_project.ids import is_business_id, is_object_id
from aiwm_project.permissions import rights_of
from nodes.models import Node
from nodes.services import NODE_TOKEN_TYPE


@dataclass(frozen=True)
class NodeIdentity:
    org_id: str
    node_pk: str
    node_id: str
    via: str  # "node-token" or "user-token"


class ConnectionRefused(Exception):
    """The handshake is refused; the message says why (sent to the client)."""


def _from_node_token(claims: dict[str, Any]) -> NodeIdentity:
    node = (
        Node.objects.filter(pk=claims.get("sub"), owner_org_id=claims.get("orgId"), is_deleted=False)
        .only("id", "node_id", "owner_org_id", "token_id")
        .first()
    )
    if node is None:
        raise ConnectionRefused("node not found")
    if not node.token_id or node.token_id != claims.get("jti"):
        raise ConnectionRefused("node token revoked")
    return NodeIdentity(org_id=node.owner_org_id, node_pk=node.pk, node_id=node.node_id, via="node-token")


def _from_user_token(token: str, node_hint: Any) -> NodeIdentity:
    try:
        principal = authenticate_user_token(token)
    except TokenError as exc:
        raise ConnectionRefused(str(exc)) from exc
    if "update" not in rights_of(principal.roles):
        raise ConnectionRefused("a user token needs write rights to speak for a node")
    if not isinstance(node_hint, str) or not (is_object_id(node_hint) or is_business_id(node_hint)):
        raise ConnectionRefused("a user token must name its node in auth.nodeId")
    condition = Q(node_id=node_hint) | (Q(pk=node_hint) if is_object_id(node_hint) else Q(pk__in=[]))
    node = Node.objects.for_org(principal.org_id).filter(condition).only("id", "node_id", "owner_org_id").first()
    if node is None:
        raise ConnectionRefused(f"node {node_hint!r} not found in your organization")
    return NodeIdentity(org_id=node.owner_org_id, node_pk=node.pk, node_id=node.node_id, via="user-token")


def authenticate_connection(token: Any, node_hint: Any = None) -> NodeIdentity:
    """Node token, or a user token with write rights plus `auth.nodeId`; anything else is refused."""
    if not isinstance(token, str) or not token:
        raise ConnectionRefused("missing token")
    try:
        claims = jwt.decode(
            token,
            settings.AIWM_NODE_TOKEN_SECRET,
            algorithms=["HS256"],
            leeway=settings.IAM_LEEWAY_SECONDS,
            options={"require": ["exp", "jti", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise ConnectionRefused("token expired") from exc
    except jwt.InvalidTokenError:
        claims = None  # not one of ours: maybe an IAM user token
    if claims is not None:
        if claims.get("typ") != NODE_TOKEN_TYPE:
            raise ConnectionRefused("not a node token")
        return _from_node_token(claims)
    return _from_user_token(token, node_hint)
