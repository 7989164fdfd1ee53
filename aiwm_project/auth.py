"""Identity: verify IAM-issued JWTs (HS256 secret, PEM public key or JWKS) and issue local ones."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from django.conf import settings
from rest_framework import authentication, exceptions
from rest_framework.request import Request

NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
KNOWN_ROLES = ("universe.owner", "organization.owner", "organization.editor", "organization.viewer")


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the IAM token says. Used as `request.user` by every API view."""

    user_id: str
    org_id: str
    username: str = ""
    group_id: str = ""
    roles: tuple[str, ...] = field(default_factory=tuple)
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    is_authenticated = True
    is_anonymous = False

    @property
    def pk(self) -> str:
        return self.user_id


class TokenError(Exception):
    """The token cannot be trusted; the message says why (it is shown to the client)."""


@functools.lru_cache(maxsize=1)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300)


def _public_key() -> str:
    value = settings.IAM_PUBLIC_KEY
    if value and not value.lstrip().startswith("-----BEGIN") and Path(value).is_file():
        return Path(value).read_text()
    return value


def _verification_key(token: str) -> Any:
    if settings.IAM_JWKS_URL:
        try:
            return _jwks_client(settings.IAM_JWKS_URL).get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientError as exc:
            raise TokenError(f"signing key not found: {exc}") from exc
    if settings.IAM_PUBLIC_KEY:
        return _public_key()
    return settings.IAM_JWT_SECRET


def decode_token(token: str) -> dict[str, Any]:
    """Verify signature, `exp` (required, small leeway), and `iss`/`aud` when configured.

    The accepted algorithms come from configuration only, never from the token's header.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            _verification_key(token),
            algorithms=settings.IAM_JWT_ALGORITHMS,
            leeway=settings.IAM_LEEWAY_SECONDS,
            issuer=settings.IAM_ISSUER or None,
            audience=settings.IAM_AUDIENCE or None,
            options={"require": ["exp"], "verify_aud": bool(settings.IAM_AUDIENCE)},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    # PyJWT checks these times with int(), which also reads "1767225600"; RFC 7519 makes each a
    # NumericDate, a JSON number, so a string (or a boolean) is refused rather than believed.
    for name in NUMERIC_DATE_CLAIMS:
        value = claims.get(name)
        if name in claims and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise TokenError(f"invalid token: {name} must be a number (a NumericDate)")
    return claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    user_id = claims.get("sub") or claims.get("userId") or claims.get("id")
    org_id = claims.get("orgId")
    if not isinstance(user_id, str) or not user_id:
        raise TokenError("token has no user id")
    if not isinstance(org_id, str) or not org_id:
        raise TokenError("token has no orgId")
    roles = claims.get("roles")
    roles = tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()
    group_id = claims.get("groupId")
    username = claims.get("username")
    return Principal(
        user_id=user_id,
        org_id=org_id,
        username=username if isinstance(username, str) else "",
        group_id=group_id if isinstance(group_id, str) else "",
        roles=roles,
        claims=claims,
    )


def authenticate_user_token(token: str) -> Principal:
    claims = decode_token(token)
    if claims.get("typ") == "node":
        raise TokenError("node tokens are only valid on the node WebSocket")
    return principal_from_claims(claims)


def issue_user_token(
    *,
    user_id: str,
    username: str,
    org_id: str,
    roles: list[str],
    group_id: str = "",
    expires_in: int | None = None,
) -> str:
    """Sign a user token the way the IAM service does (HS256 with the configured secret)."""
    if not settings.IAM_JWT_SECRET:
        raise TokenError("no IAM_JWT_SECRET configured: tokens are issued by the external IAM")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "userId": user_id,
        "username": username,
        "orgId": org_id,
        "groupId": group_id,
        "roles": roles,
        "iat": now,
        "exp": now + (expires_in if expires_in is not None else settings.AIWM_TOKEN_TTL_SECONDS),
    }
    if settings.IAM_ISSUER:
        claims["iss"] = settings.IAM_ISSUER
    if settings.IAM_AUDIENCE:
        claims["aud"] = settings.IAM_AUDIENCE
    return jwt.encode(claims, settings.IAM_JWT_SECRET, algorithm="HS256")


def bearer_token(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class IAMJWTAuthentication(authentication.BaseAuthentication):
    """DRF authentication: `Authorization: Bearer <IAM JWT>` -> Principal."""

    def authenticate(self, request: Request) -> tuple[Principal, str] | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        token = bearer_token(header)
        if token is None:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'")
        try:
            return authenticate_user_token(token), token
        except TokenError as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="aiwm"'
