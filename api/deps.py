"""Shared resources of the API process, the caller's identity and their ``Annotated`` aliases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from aiokafka.admin import AIOKafkaAdminClient
from elasticsearch import AsyncElasticsearch
from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from api.auth import KEY_PREFIX, AuthError, Caller, Role, caller_from_jwt
from api.keys import KeyStore
from api.rate_limit import RateLimiter
from projections.lag import LagReader
from projections.postgres import TaskQueries
from streams.position import Position
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import DEAD_LETTER, TASK_TOPICS


@dataclass
class Resources:
    settings: Settings
    producer: EventProducer
    queries: TaskQueries
    redis: Redis
    keys: KeyStore
    limiter: RateLimiter
    pool: AsyncConnectionPool  # the one TaskQueries reads with; also for lag and readiness
    elasticsearch: AsyncElasticsearch  # the audit index (search, readiness)
    kafka_admin: AIOKafkaAdminClient  # committed offsets (search ?after=), readiness
    lag: LagReader


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(_resources)]

# Declared as FastAPI security schemes so that /docs offers "Authorize" and the OpenAPI document
# says how to authenticate; both are optional here because either one will do.
_bearer = HTTPBearer(
    auto_error=False, description="An API key (`alk_...`) or a JWT signed with the platform's secret."
)
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (`alk_...`).")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


async def _caller(
    resources: ResourcesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> Caller:
    return await authenticate(resources, api_key or (bearer.credentials if bearer else None))


async def authenticate(resources: Resources, token: str | None) -> Caller:
    """The caller an API key or JWT stands for, after its rate limit; 401 (or 429) otherwise.

    What ``CallerDep`` does with the request's headers; callers that get the token elsewhere (a
    WebSocket's ``?access_token=``, which browsers must use) authenticate it the same way.
    """
    if not token:
        raise _unauthorized("send an API key (Authorization: Bearer alk_... or X-API-Key) or a JWT")
    settings = resources.settings
    try:
        if token.startswith(KEY_PREFIX):
            caller = await resources.keys.caller(token)
        elif settings.jwt_secret:
            caller = caller_from_jwt(
                token, secret=settings.jwt_secret, issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )
        else:
            raise AuthError("bearer JWTs are not enabled on this platform (AGENTLOG_JWT_SECRET)")
    except AuthError as exc:
        raise _unauthorized(str(exc)) from exc
    decision = await resources.limiter.take(
        caller.rate_subject,
        rate_per_second=caller.rate_per_second or settings.api_rate_per_second,
        burst=caller.rate_burst or settings.api_rate_burst,
    )
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of this {'key' if caller.key_id else 'user'} exceeded;"
            f" retry after {decision.retry_after_seconds} s",
            headers={"Retry-After": str(decision.retry_after_seconds)},
        )
    return caller


def require(role: Role) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency that lets only callers with at least ``role`` through (403 otherwise)."""

    async def check(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
        if not caller.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {role.value} role; the caller is {caller.role.value}",
            )
        return caller

    return check


CallerDep = Annotated[Caller, Depends(_caller)]
"""Any authenticated caller (viewer and up): reads, scoped to ``caller.org_id``."""
OperatorDep = Annotated[Caller, Depends(require(Role.OPERATOR))]
"""Operators and admins: submit, cancel, decide approvals."""
AdminDep = Annotated[Caller, Depends(require(Role.ADMIN))]
"""Admins: manage the org's API keys."""


# How often ?after= looks at the stored offsets: a primary-key read, cheap enough to poll; the wait
# is usually one or two polls (the projection's delay is tens of ms, docs/benchmarks.md).
_AFTER_POLL_SECONDS = 0.02


async def _read_after(
    resources: ResourcesDep,
    after: Annotated[
        str | None,
        Query(
            max_length=300,
            description=(
                "A position a command answered with (`topic:partition:offset`): answer only once the"
                " read model has applied that record (read-your-writes); 503 if it has not within"
                " the platform's bound."
            ),
        ),
    ] = None,
) -> Position | None:
    if after is None:
        return None
    try:
        position = Position.parse(after)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    # A position no command of this platform can have answered would only time out: say so now.
    partitions = {
        spec.name(resources.settings): spec.partition_count(resources.settings)
        for spec in (*TASK_TOPICS, DEAD_LETTER)
    }
    if partitions.get(position.topic, 0) <= position.partition:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            f"{after} is not a position in a topic partition the read model projects",
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + resources.settings.api_after_timeout_seconds
    while not await resources.queries.applied("postgres", position):
        if loop.time() >= deadline:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"the read model has not applied {after} within"
                f" {resources.settings.api_after_timeout_seconds:g} s; retry",
                headers={"Retry-After": "1"},
            )
        await asyncio.sleep(_AFTER_POLL_SECONDS)
    return position


AfterDep = Annotated[Position | None, Depends(_read_after)]
"""``?after=<position>``: the query waits until the Postgres projection has applied that record."""


async def reject_nul(request: HTTPConnection) -> None:
    """422 for a NUL character in a path or query parameter: no stored id or text can hold one
    (Postgres text cannot), so it names nothing, and it must not reach a query as a server error."""
    # HTTPConnection, not Request: as an app-wide dependency this also runs for WebSocket routes.
    for kind, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            if "\x00" in str(value):
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_ENTITY, f"{kind} parameter {name} contains a NUL character"
                )
