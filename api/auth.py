"""Who is calling: API keys and JWT bearer tokens, each mapped to an org, a user and a role.

Two credentials, one result (:class:`Caller`):

- an **API key** ``alk_<key_id>_<secret>`` (``Authorization: Bearer ...`` or ``X-API-Key``), looked
  up by its public ``key_id``; only the secret's SHA-256 is stored (:mod:`api.keys`);
- a **JWT** (HS256, ``AGENTLOG_JWT_SECRET``) with claims ``sub`` (user), ``org``, ``role`` and ``exp``
  (required), ``iss``/``aud`` checked when configured.

Roles are ordered: a viewer reads; an operator also submits, cancels and decides approvals; an
admin also manages the org's API keys. Every query is scoped to the caller's org.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import jwt
from pydantic import BaseModel, Field

KEY_PREFIX = "alk_"
_KEY = re.compile(r"^alk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may (admin > operator > viewer)."""
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class Caller(BaseModel):
    """The authenticated caller of a request."""

    org_id: str
    user_id: str
    role: Role
    credential: Literal["api_key", "jwt"]
    key_id: str | None = Field(default=None, description="The API key's id; None for a JWT.")
    rate_per_second: float | None = None
    rate_burst: int | None = None

    @property
    def rate_subject(self) -> str:
        """What the rate limit counts: the key, or the JWT's org and user."""
        return f"key:{self.key_id}" if self.key_id else f"jwt:{self.org_id}/{self.user_id}"


class AuthError(Exception):
    """The credential is missing, malformed, unknown, revoked or expired (answered 401)."""


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        """What the client sends; shown once, never stored."""
        return f"{KEY_PREFIX}{self.key_id}_{self.secret}"


def generate_key() -> NewKey:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    key_id = "".join(secrets.choice(alphabet) for _ in range(12))
    return NewKey(key_id=key_id, secret=secrets.token_urlsafe(32))


def parse_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of an API key, or None when ``token`` is not one."""
    match = _KEY.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_digest: bytes) -> bool:
    # Constant-time: the comparison must not tell an attacker how many leading bytes were right.
    return hmac.compare_digest(secret_digest(secret), stored_digest)


def caller_from_jwt(token: str, *, secret: str, issuer: str | None, audience: str | None) -> Caller:
    """The caller a JWT names; raises :class:`AuthError` when it is invalid or expired."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],  # never taken from the token's header: no "alg: none" downgrade
            issuer=issuer,
            audience=audience,
            options={"require": ["exp", "sub", "org", "role"], "verify_aud": audience is not None},
        )
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid bearer token: {exc}") from exc
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise AuthError(f"invalid bearer token: unknown role {claims['role']!r}") from exc
    return Caller(org_id=str(claims["org"]), user_id=str(claims["sub"]), role=role, credential="jwt")


def mint_jwt(
    *,
    secret: str,
    org_id: str,
    user_id: str,
    role: Role,
    expires_in_seconds: int = 3600,
    now: int,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """A bearer token for ``user_id`` in ``org_id`` (for services holding the secret, and tests)."""
    claims: dict[str, Any] = {
        "sub": user_id,
        "org": org_id,
        "role": role.value,
        "iat": now,
        "exp": now + expires_in_seconds,
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
