"""API keys in Postgres (``api_keys``, migration 003): create, list, revoke, and resolve to a caller."""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api.auth import AuthError, Caller, Role, generate_key, parse_key, secret_digest, secret_matches


class ApiKey(BaseModel):
    """An API key as listed: everything but its secret."""

    key_id: str
    org_id: str
    user_id: str
    role: Role
    name: str
    rate_per_second: float | None = Field(default=None, description="Own rate limit; null: the default.")
    rate_burst: int | None = None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None


class CreatedKey(ApiKey):
    token: str = Field(description="The key to send (`Authorization: Bearer <token>`); shown only now.")


_COLUMNS = (
    "key_id, org_id, user_id, role, name, rate_per_second, rate_burst, created_at, created_by, revoked_at"
)


class KeyStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def create(
        self,
        *,
        org_id: str,
        user_id: str,
        role: Role,
        created_by: str,
        name: str = "",
        rate_per_second: float | None = None,
        rate_burst: int | None = None,
    ) -> CreatedKey:
        new = generate_key()
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "INSERT INTO api_keys (key_id, secret_sha256, org_id, user_id, role, name, rate_per_second,"
                " rate_burst, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {_COLUMNS}",
                (
                    new.key_id,
                    secret_digest(new.secret),
                    org_id,
                    user_id,
                    role.value,
                    name,
                    rate_per_second,
                    rate_burst,
                    created_by,
                ),
            )
            row = await cursor.fetchone()
        assert row is not None  # INSERT ... RETURNING always returns the row
        return CreatedKey(**row, token=new.token)

    async def list(self, org_id: str | None, *, include_revoked: bool = False) -> list[ApiKey]:
        """The keys of ``org_id`` (every org's when None), newest first."""
        conditions = ["(%(org)s::text IS NULL OR org_id = %(org)s)"]
        if not include_revoked:
            conditions.append("revoked_at IS NULL")
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE {' AND '.join(conditions)}"
                " ORDER BY created_at DESC, key_id",
                {"org": org_id},
            )
            return [ApiKey.model_validate(row) for row in await cursor.fetchall()]

    async def revoke(self, key_id: str, *, org_id: str | None) -> ApiKey | None:
        """Revokes the key (of ``org_id`` when given); None when there is no such key. Revoking twice
        keeps the first revocation time."""
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())"
                " WHERE key_id = %(key)s AND (%(org)s::text IS NULL OR org_id = %(org)s)"
                f" RETURNING {_COLUMNS}",
                {"key": key_id, "org": org_id},
            )
            row = await cursor.fetchone()
        return ApiKey.model_validate(row) if row else None

    async def caller(self, token: str) -> Caller:
        """The caller an API key stands for; raises :class:`AuthError` for an unknown, revoked or
        wrong key (one message for all three: which one it was is not disclosed)."""
        parsed = parse_key(token)
        if parsed is None:
            raise AuthError("malformed API key")
        key_id, secret = parsed
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT secret_sha256, org_id, user_id, role, rate_per_second, rate_burst FROM api_keys"
                " WHERE key_id = %s AND revoked_at IS NULL",
                (key_id,),
            )
            row = await cursor.fetchone()
        if row is None or not secret_matches(secret, bytes(row["secret_sha256"])):
            raise AuthError("unknown or revoked API key")
        return Caller(
            org_id=row["org_id"],
            user_id=row["user_id"],
            role=Role(row["role"]),
            credential="api_key",
            key_id=key_id,
            rate_per_second=row["rate_per_second"],
            rate_burst=row["rate_burst"],
        )
