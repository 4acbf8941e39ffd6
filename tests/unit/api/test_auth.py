"""Credentials: API key format and hashing, JWT validation, role order."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from api.auth import (
    AuthError,
    Role,
    caller_from_jwt,
    generate_key,
    mint_jwt,
    parse_key,
    secret_digest,
    secret_matches,
)

SECRET = "a-test-secret-of-at-least-32-bytes!"
NOW = int(time.time())


def test_roles_are_ordered_viewer_operator_admin() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.ADMIN.allows(Role.VIEWER)
    assert Role.OPERATOR.allows(Role.VIEWER) and not Role.OPERATOR.allows(Role.ADMIN)
    assert not Role.VIEWER.allows(Role.OPERATOR) and Role.VIEWER.allows(Role.VIEWER)


def test_a_generated_key_parses_back_and_only_its_own_secret_matches() -> None:
    key = generate_key()
    assert parse_key(key.token) == (key.key_id, key.secret)
    assert secret_matches(key.secret, secret_digest(key.secret))
    assert not secret_matches(key.secret + "x", secret_digest(key.secret))
    assert generate_key().token != key.token


@pytest.mark.parametrize("token", ["", "alk_", "alk_short_x", "sk-abc", "alk_ABCDEFGHIJKL_" + "a" * 43])
def test_malformed_keys_do_not_parse(token: str) -> None:
    assert parse_key(token) is None


def test_a_jwt_names_its_caller() -> None:
    token = mint_jwt(secret=SECRET, org_id="acme", user_id="alice", role=Role.OPERATOR, now=NOW)
    caller = caller_from_jwt(token, secret=SECRET, issuer=None, audience=None)
    assert (caller.org_id, caller.user_id, caller.role, caller.credential) == (
        "acme",
        "alice",
        Role.OPERATOR,
        "jwt",
    )
    assert caller.rate_subject == "jwt:acme/alice"


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    "token",
    [
        mint_jwt(secret="another-secret", org_id="acme", user_id="alice", role=Role.ADMIN, now=NOW),
        mint_jwt(secret=SECRET, org_id="acme", user_id="alice", role=Role.ADMIN, now=1000),  # expired
        jwt.encode(
            {"sub": "alice", "role": "admin", "exp": NOW + 10**9}, SECRET, algorithm="HS256"
        ),  # no org
        jwt.encode(
            {"sub": "alice", "org": "acme", "role": "root", "exp": NOW + 10**9}, SECRET, algorithm="HS256"
        ),
        _unsigned({"sub": "alice", "org": "acme", "role": "admin", "exp": NOW + 10**9}),
        "not.a.jwt",
    ],
    ids=["wrong-secret", "expired", "no-org", "unknown-role", "alg-none", "garbage"],
)
def test_invalid_jwts_are_refused(token: str) -> None:
    with pytest.raises(AuthError):
        caller_from_jwt(token, secret=SECRET, issuer=None, audience=None)


def test_issuer_and_audience_are_checked_when_configured() -> None:
    token = mint_jwt(
        secret=SECRET,
        org_id="acme",
        user_id="a",
        role=Role.VIEWER,
        now=NOW,
        issuer="idp",
        audience="agentlog",
    )
    assert caller_from_jwt(token, secret=SECRET, issuer="idp", audience="agentlog").user_id == "a"
    with pytest.raises(AuthError):
        caller_from_jwt(token, secret=SECRET, issuer="other-idp", audience="agentlog")
    with pytest.raises(AuthError):
        caller_from_jwt(token, secret=SECRET, issuer="idp", audience="someone-else")
