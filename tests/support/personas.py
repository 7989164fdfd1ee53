"""Two organizations, the persona clients of the REST tests, and the principals of service-level tests.

Personas (Healthchecks' `BaseTestCase`): an owner, an editor and a viewer of org A, an owner of
org B who must see nothing of A, and an anonymous client.
"""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework.test import APIClient

from aiwm_project.auth import Principal, issue_user_token

ORG_A = "68dd05b175d9e3c17bf97f60"
ORG_B = "68dd05b175d9e3c17bf97f61"
# The user ids of the personas (IAM ObjectIds).
OWNER_A_USER_ID = "68dcf365f6a92c0d4911b619"
EDITOR_A_USER_ID = "68dcf365f6a92c0d4911b620"
VIEWER_A_USER_ID = "68dcf365f6a92c0d4911b621"
OWNER_B_USER_ID = "68dcf365f6a92c0d4911b622"

# Service-level callers (no token): the default actor of the factories.
OWNER_A = Principal(user_id="u-owner-a", org_id=ORG_A, roles=("organization.owner",))
OWNER_B = Principal(user_id="u-owner-b", org_id=ORG_B, roles=("organization.owner",))


class PersonaClient(APIClient):
    """An API client carrying a user token; remembers who it is for assertions."""

    def __init__(self, *, user_id: str = "", org_id: str = "", roles: list[str] | None = None):
        super().__init__()
        self.user_id, self.org_id = user_id, org_id
        # The caller as the API sees it: records a factory builds `actor=client.principal` are
        # owned exactly as if this client had POSTed them.
        self.principal = Principal(user_id=user_id, org_id=org_id, roles=tuple(roles or ()))
        if roles is not None:
            token = issue_user_token(user_id=user_id, username="tester", org_id=org_id, roles=roles)
            self.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")


def client_for(*, user_id: str, org_id: str, roles: list[str]) -> PersonaClient:
    return PersonaClient(user_id=user_id, org_id=org_id, roles=roles)


@dataclass
class Personas:
    owner_a: PersonaClient
    editor_a: PersonaClient
    viewer_a: PersonaClient
    owner_b: PersonaClient
    anonymous: PersonaClient


def build_personas() -> Personas:
    return Personas(
        owner_a=client_for(user_id=OWNER_A_USER_ID, org_id=ORG_A, roles=["organization.owner"]),
        editor_a=client_for(user_id=EDITOR_A_USER_ID, org_id=ORG_A, roles=["organization.editor"]),
        viewer_a=client_for(user_id=VIEWER_A_USER_ID, org_id=ORG_A, roles=["organization.viewer"]),
        owner_b=client_for(user_id=OWNER_B_USER_ID, org_id=ORG_B, roles=["organization.owner"]),
        anonymous=PersonaClient(),
    )
