"""``GET /v1/search``: full-text search over the Elasticsearch audit index, scoped to the caller's org."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from aiokafka import TopicPartition
from elasticsearch import ApiError, BadRequestError, TransportError
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CallerDep, Resources, ResourcesDep
from projections.runner import projected_topics
from streams.position import Position

router = APIRouter(prefix="/v1", tags=["search"])

# The text fields of the audit mapping (projections/elastic.py); the only ones searched and
# highlighted, so a query never touches keyword fields it could not match sensibly.
TEXT_FIELDS = (
    "payload.query",
    "payload.messages_json",
    "payload.content",
    "payload.arguments_json",
    "payload.output",
    "payload.result",
    "payload.error",
    "payload.reason",
)
MAX_PAGE = 100
# How often ?after= asks the broker for the Elasticsearch projector's committed offsets: an admin
# request, heavier than the Postgres primary-key read AfterDep polls, and the projector commits
# once per batch anyway.
_AFTER_POLL_SECONDS = 0.1
_ELASTICSEARCH_TIMEOUT_SECONDS = 10.0


class SearchOrder(StrEnum):
    newest = "newest"
    oldest = "oldest"


class SearchHit(BaseModel):
    """One audit event that matched, with the matching fragments of its text fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "5f0c6c1e-8a55-4c57-9a3b-2f4f1f7c2d10",
                    "event_type": "TaskCompleted",
                    "task_id": "0b7d2c9e-3f4e-4c55-8f0e-0a1f5b6c7d8e",
                    "user_id": "alice",
                    "sequence": 12,
                    "occurred_at": "2026-11-22T19:50:00.123Z",
                    "payload": {"result": "The answer is 126."},
                    "highlights": {"payload.result": ["The answer is <em>126</em>."]},
                }
            ]
        }
    )

    event_id: str
    event_type: str
    task_id: str
    user_id: str | None = None
    sequence: int | None = None
    occurred_at: datetime
    payload: dict[str, Any] = Field(description="The event's whole payload, as indexed.")
    highlights: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Per matched text field, fragments with the matching terms in `<em>…</em>`; the rest of"
            " the fragment is HTML-escaped, so it can be rendered as HTML."
        ),
    )


class SearchPage(BaseModel):
    total: int = Field(description="How many events match in all (not just this page).")
    hits: list[SearchHit]
    next_cursor: str | None = Field(
        description="Pass as `?cursor=` (with the same filters) for the next page; null when no more."
    )


def encode_cursor(sort: list[Any]) -> str:
    """The opaque form of a hit's sort values ``[occurred_at millis, event_id]``."""
    return base64.urlsafe_b64encode(json.dumps(sort, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> list[Any]:
    """The sort values ``token`` encodes; ``ValueError`` naming the token when it encodes none."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{token!r} is not a search cursor") from exc
    match values:
        case [int(), str()] if not isinstance(values[0], bool):
            return list(values)
    raise ValueError(f"{token!r} is not a search cursor")


def search_body(
    org_id: str,
    *,
    q: str | None,
    task_id: str | None,
    event_types: list[str] | None,
    first: datetime | None,
    last: datetime | None,
    order: SearchOrder,
    size: int,
    after: list[Any] | None,
) -> dict[str, Any]:
    """The Elasticsearch request body. The org is always a ``term`` filter taken from the caller,
    never from the query text: ``simple_query_string`` has no field syntax that could widen it, and
    it never fails on bad syntax (it drops what it cannot parse)."""
    filters: list[dict[str, Any]] = [{"term": {"org_id": org_id}}]
    if task_id:
        filters.append({"term": {"task_id": task_id}})
    if event_types:
        filters.append({"terms": {"event_type": event_types}})
    if first or last:
        span: dict[str, str] = {}
        if first:
            span["gte"] = first.isoformat()
        if last:
            span["lt"] = last.isoformat()
        filters.append({"range": {"occurred_at": span}})
    must: list[dict[str, Any]] = []
    if q:
        must.append(
            {
                "simple_query_string": {
                    "query": q,
                    "fields": list(TEXT_FIELDS),
                    "default_operator": "and",
                    "lenient": True,
                }
            }
        )
    direction = "desc" if order is SearchOrder.newest else "asc"
    body: dict[str, Any] = {
        "query": {"bool": {"filter": filters, "must": must}},
        # (time, event id) is a total order, so search_after pages through every hit exactly once
        # without the cost of deep from/size.
        "sort": [{"occurred_at": {"order": direction}}, {"event_id": {"order": direction}}],
        "size": size,
        "track_total_hits": True,
        "_source": ["event_id", "event_type", "task_id", "user_id", "sequence", "occurred_at", "payload"],
    }
    if q:
        body["highlight"] = {
            "pre_tags": ["<em>"],
            "post_tags": ["</em>"],
            # Escape the indexed text around the tags: payloads hold model output and tool output.
            "encoder": "html",
            "fields": {field: {"fragment_size": 150, "number_of_fragments": 3} for field in TEXT_FIELDS},
        }
    if after is not None:
        body["search_after"] = after
    return body


def _hit(raw: dict[str, Any]) -> SearchHit:
    source = raw["_source"]
    occurred = source["occurred_at"]
    return SearchHit(
        event_id=source["event_id"],
        event_type=source["event_type"],
        task_id=source["task_id"],
        user_id=source.get("user_id"),
        sequence=source.get("sequence"),
        occurred_at=datetime.fromisoformat(occurred).astimezone(UTC),
        payload=source.get("payload") or {},
        highlights=raw.get("highlight", {}),
    )


async def wait_for_audit_index(resources: Resources, position: Position) -> bool:
    """Wait until the Elasticsearch projector has committed past ``position``; whether it had to wait.

    Its consumer group's committed offsets are its only record of progress (it commits after a bulk
    request succeeded). 503 with Retry-After past ``api_after_timeout_seconds``; 422 for a topic
    the audit index does not project.
    """
    settings = resources.settings
    if position.topic not in projected_topics("elasticsearch", settings):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            f"the audit index does not project topic {position.topic!r}",
        )
    group = f"{settings.topic_prefix}-projector-elasticsearch"
    tp = TopicPartition(position.topic, position.partition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.api_after_timeout_seconds
    waited = False
    while True:
        remaining = deadline - loop.time()
        try:
            offsets = await asyncio.wait_for(
                resources.kafka_admin.list_consumer_group_offsets(group, partitions=[tp]),
                timeout=max(remaining, 0.05),
            )
        except TimeoutError:
            offsets = {}
        meta = offsets.get(tp)
        if meta is not None and meta.offset > position.offset:
            return waited
        if loop.time() >= deadline:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"the audit index has not applied {position.token()} within"
                f" {settings.api_after_timeout_seconds:g} s; retry",
                headers={"Retry-After": "1"},
            )
        waited = True
        await asyncio.sleep(_AFTER_POLL_SECONDS)


@router.get(
    "/search",
    response_model=SearchPage,
    operation_id="search_events",
    summary="Full-text search over the org's task events (the audit index), newest first",
    responses={
        422: {"description": "A malformed cursor, position or time range."},
        503: {"description": "Elasticsearch is unreachable, or `?after=` was not applied in time."},
    },
)
async def search_events(
    resources: ResourcesDep,
    caller: CallerDep,
    q: Annotated[
        str | None,
        Query(
            max_length=1000,
            description=(
                "Words to find in the events' text (query, prompts, answers, tool arguments and"
                " output, results, errors, reasons), all of them by default. Simple query syntax:"
                ' `"a phrase"`, `a | b`, `-not`, `pref*`; what does not parse is taken literally.'
                " Omitted: every event that passes the filters."
            ),
            examples=["quarterly report", '"rate limit" -retry'],
        ),
    ] = None,
    task_id: Annotated[str | None, Query(max_length=200, description="Only this task's events.")] = None,
    event_type: Annotated[
        list[str] | None,
        Query(
            max_length=50,
            description="Only events of these types (repeatable).",
            examples=[["TaskSubmitted", "TaskCompleted"]],
        ),
    ] = None,
    first: Annotated[
        datetime | None, Query(alias="from", description="Events at or after this time (UTC if no zone).")
    ] = None,
    last: Annotated[
        datetime | None, Query(alias="to", description="Events before this time (UTC if no zone).")
    ] = None,
    order: Annotated[SearchOrder, Query(description="Newest or oldest first.")] = SearchOrder.newest,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Hits per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=500, description="The `next_cursor` of the previous page.")
    ] = None,
    after: Annotated[
        str | None,
        Query(
            max_length=300,
            description=(
                "A position a command answered with (`topic:partition:offset`): search only once the"
                " audit index has applied that record; 503 if it has not within the platform's bound."
            ),
            examples=["agentlog.tasks.requests:3:1042"],
        ),
    ] = None,
) -> SearchPage:
    first, last = (_utc(first), _utc(last))
    if first and last and first > last:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"from ({first}) is after to ({last})")
    try:
        search_after = decode_cursor(cursor) if cursor else None
        position = Position.parse(after) if after else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    index = resources.settings.es_index_prefix
    es = resources.elasticsearch.options(request_timeout=_ELASTICSEARCH_TIMEOUT_SECONDS)
    body = search_body(
        caller.org_id,
        q=q.strip() if q else None,
        task_id=task_id,
        event_types=event_type,
        first=first,
        last=last,
        order=order,
        size=size,
        after=search_after,
    )
    try:
        if position is not None:
            await wait_for_audit_index(resources, position)
            # Committed is not yet searchable: documents appear at the next refresh (1 s by
            # default). Refreshing here, once the record is in, is what makes ?after= read-your-
            # writes; plain searches do not refresh and see the index up to a second behind.
            await es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
        # A deployment that has indexed nothing yet has no alias: no hits, not an error.
        answer = await es.search(index=index, ignore_unavailable=True, allow_no_indices=True, body=body)
    except BadRequestError as exc:
        # The body is built from validated parameters, so this is an unusual value (say a cursor
        # of another sort order): the caller's to fix, not a server fault.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, f"Elasticsearch rejected the search: {_reason(exc)}"
        ) from exc
    except (ApiError, TransportError) as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the audit index is unavailable: {type(exc).__name__}",
            headers={"Retry-After": "1"},
        ) from exc
    raw_hits = answer["hits"]["hits"]
    hits = [_hit(raw) for raw in raw_hits]
    next_cursor = encode_cursor(raw_hits[-1]["sort"]) if len(raw_hits) == size else None
    return SearchPage(total=answer["hits"]["total"]["value"], hits=hits, next_cursor=next_cursor)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _reason(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", {})
    if isinstance(error, dict):
        causes = error.get("root_cause") or [error]
        return str(causes[0].get("reason", exc.message))
    return str(exc.message)
