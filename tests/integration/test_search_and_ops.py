"""Search over the audit index, the operations endpoints and the dead-letter listing, through the
REST API of a whole platform on the real stack."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from processors.task.history import submission
from schemas.codec import EventCodec
from schemas.events import TaskSubmitted
from schemas.registry.client import RegistryClient
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import REQUESTS
from tests.integration.conftest import api, submit_and_wait, wait_for

INDEXED_TIMEOUT = 30.0


def search(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def searched(client: httpx.Client, what: str, **params: Any) -> dict[str, Any]:
    """The first answer with hits (the audit index is refreshed about once a second)."""
    return wait_for(lambda: (page := search(client, **params))["hits"] and page, INDEXED_TIMEOUT, what)


@pytest.fixture(scope="module")
def searchable_task(platform: Settings) -> tuple[str, str, dict[str, Any]]:
    """(org, the query's unique word, the completed view) of a task in an org of its own."""
    org, word = f"org-{uuid.uuid4().hex[:8]}", f"zebra{uuid.uuid4().hex[:6]}"
    view = submit_and_wait(platform, {"query": f"What is (17 + 25) * 3? Tag {word}"}, org=org)
    assert view["status"] == "completed", view
    return org, word, view


def test_search_finds_a_task_by_a_word_of_its_query_and_of_its_result_with_highlights(
    platform: Settings, searchable_task: tuple[str, str, dict[str, Any]]
) -> None:
    org, word, view = searchable_task
    task_id = view["task_id"]
    with api(platform, org=org, role="viewer") as client:
        by_query = searched(client, f"the submission matching {word}", q=word)
        [submitted] = [hit for hit in by_query["hits"] if hit["event_type"] == "TaskSubmitted"]
        assert submitted["task_id"] == task_id
        assert f"<em>{word}</em>" in " ".join(submitted["highlights"]["payload.query"])

        # A word of the answer, searched in this task only (the org has no other task anyway).
        result_word = max(re.findall(r"[A-Za-z0-9]{3,}", view["result"]), key=len)
        by_result = searched(client, f"the result matching {result_word}", q=result_word, task_id=task_id)
        completed = [hit for hit in by_result["hits"] if hit["event_type"] == "TaskCompleted"]
        assert completed, by_result
        assert re.search(
            rf"<em>{re.escape(result_word)}</em>",
            " ".join(completed[0]["highlights"]["payload.result"]),
            re.I,
        )
        assert all(hit["task_id"] == task_id for hit in by_result["hits"])

    # Another org searching the same word finds nothing of it, even with the task's id.
    with api(platform, org=f"other-{uuid.uuid4().hex[:8]}", role="admin") as other:
        assert search(other, q=word) == {"total": 0, "hits": [], "next_cursor": None}
        assert search(other, task_id=task_id)["total"] == 0


def test_search_filters_by_event_type_and_task_and_the_cursor_pages_through_every_hit_once(
    platform: Settings, searchable_task: tuple[str, str, dict[str, Any]]
) -> None:
    org, _, view = searchable_task
    task_id = view["task_id"]
    with api(platform, org=org, role="viewer") as client:
        everything = wait_for(
            lambda: (
                (page := search(client, task_id=task_id, size=100))["total"] == view["event_count"] and page
            ),
            INDEXED_TIMEOUT,
            "every event of the task to be searchable",
        )
        assert {hit["task_id"] for hit in everything["hits"]} == {task_id}
        types = {hit["event_type"] for hit in everything["hits"]}
        assert {"TaskSubmitted", "TaskCompleted"} <= types and len(types) > 2

        two_types = search(client, task_id=task_id, event_type=["TaskSubmitted", "TaskCompleted"])
        assert sorted(hit["event_type"] for hit in two_types["hits"]) == ["TaskCompleted", "TaskSubmitted"]
        assert two_types["total"] == 2

        seen: list[str] = []
        pages = 0
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"task_id": task_id, "size": 3, "order": "oldest"}
            if cursor:
                params["cursor"] = cursor
            page = search(client, **params)
            assert page["total"] == view["event_count"]
            seen += [hit["event_id"] for hit in page["hits"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == view["event_count"]
        assert pages >= view["event_count"] // 3
        assert set(seen) == {hit["event_id"] for hit in everything["hits"]}
        # Oldest first: the submission starts the task's history.
        assert (
            search(client, task_id=task_id, size=1, order="oldest")["hits"][0]["event_type"]
            == "TaskSubmitted"
        )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": '"unbalanced (AND | -* ~~ field:value'}, 200),  # user syntax never fails the search
        ({"q": "x", "cursor": "not-a-cursor"}, 422),
        ({"q": "x", "size": 101}, 422),
        ({"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, 422),
        ({"after": "not a position"}, 422),
        ({"after": "some-other-topic:0:1"}, 422),
    ],
)
def test_search_answers_bad_input_with_200_or_422_never_500(
    platform: Settings, params: dict[str, Any], expected: int
) -> None:
    with api(platform, role="viewer") as client:
        response = client.get("/v1/search", params=params)
    assert response.status_code == expected, response.text
    if expected != 200:
        assert response.headers["content-type"] == "application/problem+json"


def test_search_after_a_submission_finds_its_submission_event(platform: Settings) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    with api(platform, org=org) as client:
        accepted = client.post("/v1/tasks", json={"query": "What is 2 + 2?"})
        assert accepted.status_code == 202, accepted.text
        task_id, position = accepted.json()["task_id"], accepted.json()["position"]
        # No polling: ?after= makes the submission searchable by the time the answer comes.
        page = search(client, after=position, task_id=task_id, event_type="TaskSubmitted")
        assert [hit["event_type"] for hit in page["hits"]] == ["TaskSubmitted"]
        assert page["hits"][0]["payload"]["query"] == "What is 2 + 2?"

        topic, partition, _ = position.split(":")
        never = client.get(
            "/v1/search",
            params={"after": f"{topic}:{partition}:999999999"},
            timeout=platform.api_after_timeout_seconds + 20,
        )
        assert never.status_code == 503, never.text
        assert never.headers["retry-after"] == "1"


def test_readyz_lists_every_dependency_ok_without_credentials(platform: Settings) -> None:
    response = httpx.get(f"http://{platform.api_host}:{platform.api_port}/readyz", timeout=10)
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert {check["name"] for check in checks} == {"kafka", "postgres", "elasticsearch", "redis"}
    assert all(check["ok"] and check["error"] is None for check in checks), checks


def test_metrics_count_requests_by_route_template_and_export_the_lag_gauges(platform: Settings) -> None:
    base = f"http://{platform.api_host}:{platform.api_port}"
    missing = str(uuid.uuid4())
    with api(platform, role="viewer") as client:
        assert client.get(f"/v1/tasks/{missing}").status_code == 404
        assert client.get(f"/no/such/{missing}").status_code == 404

    def exposition() -> str | None:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        return text if 'agentlog_projection_lag_events{projector="elasticsearch"}' in text else None

    text = wait_for(exposition, 15, "the lag gauges on /metrics")
    assert re.search(
        r'agentlog_http_requests_total\{method="GET",route="/v1/tasks/\{task_id\}",status="404"\} [1-9]', text
    )
    assert (
        'agentlog_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/tasks/{task_id}"}'
        in text
    )
    assert 'route="/no/such/' not in text and missing not in text  # raw paths never become labels
    assert 'route="<unmatched>",status="404"' in text
    assert 'agentlog_projection_lag_events{projector="postgres"}' in text
    assert 'agentlog_projection_lag_seconds{projector="postgres"}' in text


def test_status_lists_both_projectors_lag_and_needs_credentials(platform: Settings) -> None:
    base = f"http://{platform.api_host}:{platform.api_port}"
    assert httpx.get(f"{base}/v1/status", timeout=10).status_code == 401
    with api(platform, role="viewer") as client:
        response = client.get("/v1/status", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] and body["lag_error"] is None
    lag = {projector["projector"]: projector for projector in body["projectors"]}
    assert set(lag) == {"postgres", "elasticsearch"}
    assert all(p["events_behind"] >= 0 and p["partitions"] for p in lag.values())
    assert all(p["seconds_behind"] is None or p["seconds_behind"] >= 0 for p in lag.values())
    assert all(dependency["ok"] for dependency in body["dependencies"]), body["dependencies"]


async def park_a_submission(settings: Settings, org: str) -> str:
    """A dead-letter record whose parked value is a valid submission of ``org`` (as when handling a
    decodable record failed); the parked task's id."""
    task_id = str(uuid.uuid4())
    topic = REQUESTS.name(settings)
    registry = RegistryClient(settings.schema_registry_url)
    codec = EventCodec(registry)
    producer = EventProducer(settings, codec, source="/agentlog/tests")
    await producer.start()
    try:
        event, body = submission(
            task_id=task_id,
            org_id=org,
            user_id="bob",
            payload=TaskSubmitted(query="park me"),
            now=datetime.now(UTC),
            producer="test",
            producer_version="0",
        )
        value = await codec.encode_body(topic, event.payload.fullname(), body)
        await producer.dead_letter(
            source_topic=topic,
            partition=0,
            offset=0,
            key=task_id.encode(),
            value=value,
            headers=None,
            error=RuntimeError(f"handling {task_id} failed (test)"),
            consumer="tests",
        )
    finally:
        await producer.stop()
        await registry.close()
    return task_id


def test_dead_letters_are_listed_to_operators_of_their_org_newest_first_with_a_cursor(
    platform: Settings,
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    parked = [asyncio.run(park_a_submission(platform, org)) for _ in range(3)]
    with api(platform, org=org, role="viewer") as viewer:
        assert viewer.get("/v1/dead-letters").status_code == 403
    with api(platform, org=org, role="operator") as operator:

        def listed() -> list[dict[str, Any]] | None:
            response = operator.get("/v1/dead-letters", params={"limit": 100})
            assert response.status_code == 200, response.text
            entries = response.json()["dead_letters"]
            return entries if len(entries) == len(parked) else None

        entries = wait_for(listed, 30, "the parked records in the read model")
        assert [entry["task_id"] for entry in entries] == parked[::-1]  # newest first
        assert {entry["org_id"] for entry in entries} == {org}
        assert (
            entries[0]["event_type"] == "agentlog.events.TaskSubmitted"
            and "failed (test)" in entries[0]["error"]
        )
        assert entries[0]["value_size"] > 0 and len(entries[0]["value_sha256"]) == 64

        first = operator.get("/v1/dead-letters", params={"limit": 2}).json()
        assert [e["task_id"] for e in first["dead_letters"]] == parked[:0:-1] and first["next_cursor"]
        rest = operator.get("/v1/dead-letters", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [e["task_id"] for e in rest["dead_letters"]] == parked[:1] and rest["next_cursor"] is None
        assert operator.get("/v1/dead-letters", params={"cursor": "nope"}).status_code == 422
    with api(platform, org=f"other-{uuid.uuid4().hex[:8]}", role="admin") as other:
        assert other.get("/v1/dead-letters").json() == {"dead_letters": [], "next_cursor": None}
