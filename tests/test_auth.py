"""IAM token verification: HS256, RS256/ES256 by PEM or JWKS, expiry, issuer/audience, roles."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.test import override_settings
from rest_framework.test import APIClient

from aiwm_project import auth
from tests.support.api import assert_error
from tests.support.tokens import HS256_SECRET as SECRET

URL = "/api/nodes"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "68dcf365f6a92c0d4911b619",
        "username": "tonyh",
        "orgId": "org-auth",
        "roles": ["organization.owner"],
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def get_with(token: str) -> Any:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get(URL)


@pytest.mark.django_db
class TestHS256:
    def test_valid_token_is_accepted(self, hs256: None) -> None:
        assert get_with(jwt.encode(claims(), SECRET, algorithm="HS256")).status_code == 200

    def test_wrong_secret_is_401(self, hs256: None) -> None:
        body = assert_error(
            get_with(jwt.encode(claims(), "another-secret-of-enough-length-xx", algorithm="HS256")), 401
        )
        assert body["message"] == "Unauthorized"

    def test_expired_token_is_401_even_within_grace_of_none(self, hs256: None, settings: Any) -> None:
        settings.IAM_LEEWAY_SECONDS = 5
        expired = jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256")
        body = assert_error(get_with(expired), 401)
        assert "token expired" in body["errors"][0]

    def test_small_leeway_accepts_just_expired(self, hs256: None, settings: Any) -> None:
        settings.IAM_LEEWAY_SECONDS = 30
        just = jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
        assert get_with(just).status_code == 200

    def test_token_without_exp_is_401(self, hs256: None) -> None:
        assert_error(get_with(jwt.encode(claims(exp=None), SECRET, algorithm="HS256")), 401)

    def test_alg_none_is_refused(self, hs256: None) -> None:
        unsigned = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
        assert_error(get_with(unsigned), 401)

    @pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
    def test_algorithm_comes_from_configuration_not_the_token(self, hs256: None) -> None:
        # Right secret, but an algorithm the configuration does not allow.
        token = jwt.encode(claims(), SECRET, algorithm="HS512")
        assert_error(get_with(token), 401)

    def test_issuer_and_audience_checked_when_configured(self, hs256: None, settings: Any) -> None:
        settings.IAM_ISSUER = "https://iam.example"
        settings.IAM_AUDIENCE = "aiwm"
        good = jwt.encode(claims(iss="https://iam.example", aud="aiwm"), SECRET, algorithm="HS256")
        assert get_with(good).status_code == 200
        for bad in (
            claims(iss="https://evil.example", aud="aiwm"),
            claims(iss="https://iam.example", aud="other"),
            claims(aud="aiwm"),
            claims(iss="https://iam.example"),
        ):
            assert_error(get_with(jwt.encode(bad, SECRET, algorithm="HS256")), 401)

    def test_claims_without_org_or_user_are_401(self, hs256: None) -> None:
        assert_error(get_with(jwt.encode(claims(orgId=None), SECRET, algorithm="HS256")), 401)
        assert_error(get_with(jwt.encode(claims(sub=None), SECRET, algorithm="HS256")), 401)
        assert get_with(jwt.encode(claims(sub=None, userId="u-2"), SECRET, algorithm="HS256")).status_code == 200

    def test_unknown_or_missing_roles_are_403(self, hs256: None) -> None:
        for roles in ([], ["universe.janitor"], "organization.owner", None):
            body = assert_error(get_with(jwt.encode(claims(roles=roles), SECRET, algorithm="HS256")), 403)
            assert body["message"] == "You do not have permission to read"

    def test_universe_owner_may_everything_in_its_org(self, hs256: None) -> None:
        token = jwt.encode(claims(roles=["universe.owner"]), SECRET, algorithm="HS256")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        created = client.post(URL, {"nodeId": "n-1", "name": "n", "cpuCores": 1}, format="json")
        assert created.status_code == 201
        assert created.json()["owner"]["orgId"] == "org-auth"
        assert client.delete(f"{URL}/n-1").status_code == 200

    def test_malformed_authorization_headers(self, hs256: None) -> None:
        for header in ("Basic abc", "Bearer", "Bearer ", "token abc"):
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=header)
            assert_error(client.get(URL), 401)

    def test_node_tokens_are_refused_on_rest(self, hs256: None) -> None:
        assert_error(get_with(jwt.encode(claims(typ="node"), SECRET, algorithm="HS256")), 401)


def _pem_public(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _hs256_by_hand(payload: dict[str, Any], secret: bytes) -> str:
    """PyJWT refuses to sign with a PEM as HMAC secret, so forge the token the way an attacker would."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_public_key_algorithms(settings: Any, algorithm: str, make_key: Any, tmp_path: Any) -> None:
    key = make_key()
    settings.IAM_JWT_SECRET = ""
    settings.IAM_JWKS_URL = ""
    settings.IAM_JWT_ALGORITHMS = [algorithm]
    settings.IAM_ISSUER = settings.IAM_AUDIENCE = ""
    pem_file = tmp_path / "iam.pem"
    pem_file.write_text(_pem_public(key))
    for configured in (_pem_public(key), str(pem_file)):  # the PEM itself, or a path to it
        settings.IAM_PUBLIC_KEY = configured
        assert get_with(jwt.encode(claims(), key, algorithm=algorithm)).status_code == 200
        other = make_key()
        assert_error(get_with(jwt.encode(claims(), other, algorithm=algorithm)), 401)
        # HS256 signed with the public key as the secret (algorithm confusion) is refused.
        assert_error(get_with(_hs256_by_hand(claims(), _pem_public(key).encode())), 401)


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "key-1", "use": "sig", "alg": "RS256"})
    payload = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    auth._jwks_client.cache_clear()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", key
    server.shutdown()
    auth._jwks_client.cache_clear()


@pytest.mark.django_db
def test_jwks_url(settings: Any, jwks_server: tuple[str, Any]) -> None:
    url, key = jwks_server
    settings.IAM_JWT_SECRET = ""
    settings.IAM_PUBLIC_KEY = ""
    settings.IAM_JWKS_URL = url
    settings.IAM_JWT_ALGORITHMS = ["RS256"]
    settings.IAM_ISSUER = settings.IAM_AUDIENCE = ""
    good = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "key-1"})
    assert get_with(good).status_code == 200
    unknown_kid = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "key-2"})
    assert_error(get_with(unknown_kid), 401)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_error(get_with(jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "key-1"})), 401)


@override_settings(IAM_JWT_SECRET="")
def test_issuing_needs_a_shared_secret() -> None:
    with pytest.raises(auth.TokenError):
        auth.issue_user_token(user_id="u", username="u", org_id="o", roles=["organization.owner"])
