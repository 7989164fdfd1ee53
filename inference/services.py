"""API keys: created (the secret returned once), revoked, and checked on every /v1 request.

A key is `aiwm_` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 is stored:
a secret that long cannot be guessed, so a slow password hash would only slow every request down.
The gateway checks a key against an in-process cache of what it read (`KEY_CACHE_SECONDS`); a key
revoked in this process is dropped from the cache at once, in another web process within that time.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from aiwm_project.auth import Principal
from aiwm_project.exceptions import ValidationFailed
from aiwm_project.ids import new_object_id
from aiwm_project.services import entity_create, entity_delete
from inference.models import ApiKey

KEY_PREFIX = "aiwm_"
SHOWN_PREFIX_CHARS = 12  # "aiwm_" and 7 characters of the secret: enough to tell keys apart
KEY_CACHE_SECONDS = 10.0


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, data: dict[str, Any], actor: Principal) -> tuple[ApiKey, str]:
    """A new key of the actor's organization and its secret (shown once, never stored)."""
    expires_at = data.get("expires_at")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed(["expiresAt: must be in the future"])
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    fields = {
        "api_key_id": data.get("api_key_id") or f"key-{new_object_id()}",
        "name": data["name"],
        "models": list(dict.fromkeys(data.get("models") or [])),
        "expires_at": expires_at,
        "prefix": secret[:SHOWN_PREFIX_CHARS],
        "key_hash": key_hash(secret),
    }
    return entity_create(model=ApiKey, data=fields, actor=actor), secret


def api_key_revoke(*, instance: ApiKey, actor: Principal) -> ApiKey:
    revoked = entity_delete(instance=instance, actor=actor)
    KEYS.forget(revoked.key_hash)
    return revoked


# --- checking a key on a request ---


@dataclass(frozen=True)
class KeyHolder:
    """Who calls with a valid key: its organization, the key, what it may call."""

    org_id: str
    api_key_id: str
    key_hash: str
    models: frozenset[str]
    expires_at: datetime | None
    created_by: str

    def may_call(self, *names: str) -> bool:
        return not self.models or any(name in self.models for name in names)


class KeyCache:
    """What the database said of a key hash (a holder, or None: unknown or revoked), for a few seconds."""

    def __init__(self, seconds: float = KEY_CACHE_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, KeyHolder | None]] = {}

    def lookup(self, digest: str) -> tuple[bool, KeyHolder | None]:
        """(known, holder): known is False when the database must be asked."""
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] > self.seconds:
            return False, None
        return True, entry[1]

    def store(self, digest: str, holder: KeyHolder | None) -> None:
        with self._lock:
            if len(self._entries) > 10_000:  # random keys tried by a client: bounded memory
                self._entries.clear()
            self._entries[digest] = (time.monotonic(), holder)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)


KEYS = KeyCache()


def key_holder_from_db(digest: str) -> KeyHolder | None:
    """The live key with this hash (sync: run in a thread by the gateway)."""
    row = (
        ApiKey.objects.filter(key_hash=digest, is_deleted=False)
        .values("owner_org_id", "api_key_id", "models", "expires_at", "created_by")
        .first()
    )
    if row is None:
        return None
    models = row["models"] if isinstance(row["models"], list) else []
    return KeyHolder(
        org_id=row["owner_org_id"],
        api_key_id=row["api_key_id"],
        key_hash=digest,
        models=frozenset(m for m in models if isinstance(m, str)),
        expires_at=row["expires_at"],
        created_by=row["created_by"],
    )


def keys_mark_used(used: dict[str, datetime]) -> None:
    """`lastUsedAt` of the keys used since the last call (key hash -> when), in one UPDATE per key."""
    for digest, at in used.items():
        ApiKey.objects.filter(key_hash=digest, is_deleted=False).update(last_used_at=at)
