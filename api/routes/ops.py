"""Operations: ``/readyz`` (every dependency answers), ``/v1/status`` (version, projection lag,
dependencies), ``/metrics`` (Prometheus) and the HTTP request metrics middleware."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CallerDep, Resources, ResourcesDep
from api.errors import PROBLEM_JSON, problem
from projections.lag import ProjectorLag, export, export_consumer_lag
from streams.metrics import APPROVALS_PENDING

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])

# Each dependency gets this long to answer a readiness probe: short, so a probe (typically every
# few seconds, with its own timeout) learns of a hung dependency instead of hanging itself.
CHECK_TIMEOUT_SECONDS = 2.0
LAG_REFRESH_SECONDS = 5.0
_LAG_TIMEOUT_SECONDS = 10.0

HTTP_REQUESTS = Counter(
    "agentlog_http_requests_total",
    "HTTP requests answered by the API, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "agentlog_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response started), by method and route template.",
    ["method", "route"],
)
# Requests that matched no route: one label value, so random URLs cannot grow the series.
UNMATCHED_ROUTE = "<unmatched>"


class RequestMetrics:
    """ASGI middleware counting requests by route *template* (``/v1/tasks/{task_id}``), never the
    raw path, so the number of series stays bounded by the number of routes."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500  # what the client gets if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                # Measured at the response start: streamed bodies (live views) would otherwise
                # record how long the client stayed connected.
                HTTP_REQUEST_SECONDS.labels(scope["method"], _route_of(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self._app(scope, receive, send_status)
        finally:
            HTTP_REQUESTS.labels(scope["method"], _route_of(scope), str(status_code)).inc()


def _route_of(scope: Scope) -> str:
    # The router writes the matched route into the (shared) scope before calling the endpoint.
    route: BaseRoute | None = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class DependencyCheck(BaseModel):
    name: str = Field(examples=["postgres"])
    ok: bool
    seconds: float = Field(description="How long the check took.")
    error: str | None = Field(default=None, description="Why it failed; null when ok.")


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    checks: list[DependencyCheck]


class PlatformStatus(BaseModel):
    version: str = Field(examples=["0.1.0"])
    offline_llm: bool
    projectors: list[ProjectorLag] | None = Field(
        description="Each projector's lag (events and seconds behind, per partition); null when it"
        " could not be measured (see lag_error)."
    )
    lag_error: str | None = None
    dependencies: list[DependencyCheck]


async def _ping_kafka(resources: Resources) -> None:
    await resources.kafka_admin.describe_cluster()


async def _ping_postgres(resources: Resources) -> None:
    async with resources.pool.connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
        await conn.execute("SELECT 1")


async def _ping_elasticsearch(resources: Resources) -> None:
    client = resources.elasticsearch.options(request_timeout=CHECK_TIMEOUT_SECONDS, max_retries=0)
    await client.info()


async def _ping_redis(resources: Resources) -> None:
    await resources.redis.ping()


_CHECKS: dict[str, Callable[[Resources], Awaitable[None]]] = {
    "kafka": _ping_kafka,
    "postgres": _ping_postgres,
    "elasticsearch": _ping_elasticsearch,
    "redis": _ping_redis,
}


async def _check(name: str, resources: Resources) -> DependencyCheck:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(_CHECKS[name](resources), timeout=CHECK_TIMEOUT_SECONDS)
        error = None
    except TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # any failure means "not ready"; the reason goes to the caller
        error = f"{type(exc).__name__}: {exc}"[:500]
    return DependencyCheck(name=name, ok=error is None, seconds=time.perf_counter() - started, error=error)


async def check_dependencies(resources: Resources) -> list[DependencyCheck]:
    """Kafka, Postgres, Elasticsearch and Redis, checked concurrently, each with a short timeout."""
    return list(await asyncio.gather(*(_check(name, resources) for name in _CHECKS)))


async def refresh_lag_gauges(resources: Resources, every: float = LAG_REFRESH_SECONDS) -> None:
    """Measure the projection lag, the consumer groups' lag and the pending approvals every
    ``every`` seconds and export them as Prometheus gauges, so ``/metrics`` is current without a
    scrape having to measure. Runs until cancelled."""
    while True:
        try:
            lag = await asyncio.wait_for(resources.lag.read(resources.pool), timeout=_LAG_TIMEOUT_SECONDS)
            export(lag)
            consumers = await asyncio.wait_for(resources.lag.consumer_lag(), timeout=_LAG_TIMEOUT_SECONDS)
            export_consumer_lag(consumers)
            pending = await asyncio.wait_for(_approvals_pending(resources), timeout=_LAG_TIMEOUT_SECONDS)
            APPROVALS_PENDING.set(pending)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Kafka or Postgres away: the gauges keep their last values; the next round retries.
            log.warning("could not measure the projection lag", exc_info=True)
        await asyncio.sleep(every)


async def _approvals_pending(resources: Resources) -> int:
    async with resources.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM approvals WHERE status = 'pending'")
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="readiness",
    summary="Ready: Kafka, Postgres, Elasticsearch and Redis all answer (no authentication)",
    responses={
        503: {
            "description": "A dependency did not answer; `checks` lists each one.",
            "content": {
                PROBLEM_JSON: {
                    "example": {
                        "type": "about:blank",
                        "title": "Service Unavailable",
                        "status": 503,
                        "detail": "not ready: elasticsearch",
                        "checks": [
                            {"name": "kafka", "ok": True, "seconds": 0.004, "error": None},
                            {
                                "name": "elasticsearch",
                                "ok": False,
                                "seconds": 2.0,
                                "error": "no answer within 2 s",
                            },
                        ],
                    }
                }
            },
        }
    },
)
async def readiness(resources: ResourcesDep) -> Any:
    checks = await check_dependencies(resources)
    failed = [check.name for check in checks if not check.ok]
    if failed:
        return problem(
            503,
            "Service Unavailable",
            f"not ready: {', '.join(failed)}",
            headers={"Retry-After": "5"},
            checks=[check.model_dump() for check in checks],
        )
    return Readiness(status="ready", checks=checks)


@router.get(
    "/v1/status",
    response_model=PlatformStatus,
    operation_id="get_status",
    summary="Version, each projector's lag and whether the dependencies answer",
    responses={401: {"description": "No or bad credentials."}},
)
async def get_status(request: Request, resources: ResourcesDep, _: CallerDep) -> PlatformStatus:
    checks_task = asyncio.create_task(check_dependencies(resources))
    projectors: list[ProjectorLag] | None = None
    lag_error = None
    try:
        lag = await asyncio.wait_for(resources.lag.read(resources.pool), timeout=_LAG_TIMEOUT_SECONDS)
        export(lag)
        projectors = lag.projectors
    except TimeoutError:
        lag_error = f"not measured within {_LAG_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # a status page reports a broken dependency, it does not fail on one
        lag_error = f"{type(exc).__name__}: {exc}"[:500]
    return PlatformStatus(
        version=request.app.version,
        offline_llm=resources.settings.offline,
        projectors=projectors,
        lag_error=lag_error,
        dependencies=await checks_task,
    )


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics: HTTP requests by route and status, projection lag (no authentication)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
