"""IAM tokens signed by hand, for the tests of token checks (the `hs256` fixture in conftest.py)."""

from __future__ import annotations

from typing import Any

HS256_SECRET = "test-shared-secret-that-is-long-enough-for-hs256"


def use_hs256(settings: Any) -> None:
    """The IAM checks HS256 tokens signed with HS256_SECRET, and nothing else (no issuer, audience, JWKS)."""
    settings.IAM_JWT_SECRET = HS256_SECRET
    settings.IAM_PUBLIC_KEY = ""
    settings.IAM_JWKS_URL = ""
    settings.IAM_JWT_ALGORITHMS = ["HS256"]
    settings.IAM_ISSUER = ""
    settings.IAM_AUDIENCE = ""
