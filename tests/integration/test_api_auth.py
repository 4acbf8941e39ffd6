"""The REST API's callers: API keys and JWTs, roles, org scoping, rate limits; and what callers rely on:
idempotent submission, read-your-writes (``?after=``), filtered and cursor-paged task lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import Role, mint_jwt
from streams.position import Position
from streams.settings import Settings
from streams.topics import REQUESTS
from tests.integration.conftest import api, submit_and_wait, task_history
from tests.integration.test_produce import end_offsets
from tests.integration.test_tenancy import _example_body

AGENTLOG = Path(sys.executable).with_name("agentlog")


def _base(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


def _client(settings: Settings, token: str | None = None, **headers: str) -> httpx.Client:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=_base(settings), timeout=15, headers=headers)


def _cli_key(settings: Settings, *args: str) -> dict[str, Any]:
    """``agentlog keys create ... --json`` against the test database."""
    done = subprocess.run(
        [str(AGENTLOG), "keys", "create", *args, "--json"],
        env={**os.environ, "AGENTLOG_POSTGRES_DSN": settings.postgres_dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    created: dict[str, Any] = json.loads(done.stdout)
    return created


def _org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


def test_requests_without_valid_credentials_get_401_in_the_problem_shape(platform: Settings) -> None:
    forged = mint_jwt(secret="x" * 40, org_id="acme", user_id="eve", role=Role.ADMIN, now=int(time.time()))
    for token in (None, "alk_aaaaaaaaaaaa_" + "b" * 43, "garbage", forged):
        with _client(platform, token) as client:
            reply = client.get("/v1/tasks")
        assert reply.status_code == 401, (token, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.headers["www-authenticate"] == "Bearer"
        assert reply.json()["status"] == 401 and reply.json()["detail"]


def test_api_keys_carry_org_user_and_role_and_revocation_takes_effect(platform: Settings) -> None:
    org = _org()
    admin = _cli_key(platform, "--org", org, "--user", "root", "--role", "admin", "--name", "bootstrap")
    assert admin["token"].startswith("alk_") and admin["role"] == "admin"
    with _client(platform, admin["token"]) as client:
        operator = client.post("/v1/keys", json={"user_id": "ops", "role": "operator"})
        viewer = client.post("/v1/keys", json={"user_id": "reader"})  # viewer by default
        assert operator.status_code == viewer.status_code == 201, operator.text
        listed = client.get("/v1/keys").json()
    assert {k["user_id"] for k in listed} == {"root", "ops", "reader"}
    assert all("token" not in k and "secret" not in json.dumps(k) for k in listed)
    operator_token, viewer_token = operator.json()["token"], viewer.json()["token"]

    # The operator submits (as its own user, in its own org, with X-API-Key this time) ...
    with _client(platform, **{"X-API-Key": operator_token}) as client:
        submitted = client.post("/v1/tasks", json={"query": "What is 2 + 3?"})
        assert submitted.status_code == 202, submitted.text
        # ... but manages no keys.
        assert client.get("/v1/keys").status_code == 403
        assert client.post("/v1/keys", json={"user_id": "x"}).status_code == 403
    task_id = submitted.json()["task_id"]
    # The viewer reads (after the submission is projected) but may not submit or cancel.
    with _client(platform, viewer_token) as client:
        view = client.get(f"/v1/tasks/{task_id}", params={"after": submitted.json()["position"]})
        assert view.status_code == 200, view.text
        assert (view.json()["org_id"], view.json()["user_id"]) == (org, "ops")
        refused = client.post("/v1/tasks", json={"query": "hi"})
        assert refused.status_code == 403 and "operator" in refused.json()["detail"]
        assert client.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "x"}).status_code == 403

    # Another org's admin sees nothing of it and cannot revoke its keys.
    other_admin = _cli_key(platform, "--org", _org(), "--user", "root", "--role", "admin")
    with _client(platform, other_admin["token"]) as client:
        assert client.get(f"/v1/tasks/{task_id}").status_code == 404
        assert client.get(f"/v1/tasks/{task_id}/events").status_code == 404
        assert client.delete(f"/v1/keys/{viewer.json()['key_id']}").status_code == 404
        assert task_id not in {t["task_id"] for t in client.get("/v1/tasks").json()["tasks"]}

    with _client(platform, admin["token"]) as client:
        revoked = client.delete(f"/v1/keys/{viewer.json()['key_id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    with _client(platform, viewer_token) as client:
        assert client.get(f"/v1/tasks/{task_id}").status_code == 401


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(platform: Settings) -> None:
    key = _cli_key(
        platform, "--org", _org(), "--user", "busy", "--rate-per-second", "0.5", "--rate-burst", "3"
    )
    with _client(platform, key["token"]) as client:
        answers = [client.get("/v1/tasks") for _ in range(5)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    limited = answers[3]
    assert limited.status_code == 429 and answers[4].status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 2  # one token per 2 s
    time.sleep(int(limited.headers["retry-after"]) + 0.2)
    with _client(platform, key["token"]) as client:
        assert client.get("/v1/tasks").status_code == 200


def test_the_same_idempotency_key_returns_the_same_task_never_a_second(platform: Settings) -> None:
    org, key = _org(), f"order-{uuid.uuid4()}"
    with api(platform, org=org) as client:
        answers = [
            client.post("/v1/tasks", json={"query": "What is 6 * 7?"}, headers={"Idempotency-Key": key})
            for _ in range(3)
        ]
        assert {a.status_code for a in answers} == {202}
        [task_id] = {a.json()["task_id"] for a in answers}
        view = submit_and_wait(platform, {"query": "What is 6 * 7?"}, org=org, idempotency_key=key)
        assert view["task_id"] == task_id and view["status"] == "completed"
        listed = client.get("/v1/tasks", params={"after": answers[-1].json()["position"]}).json()["tasks"]
    assert [t["task_id"] for t in listed] == [task_id]  # one task in the org, not three
    # The same key in another org is another task.
    with api(platform, org=_org()) as client:
        other = client.post("/v1/tasks", json={"query": "What is 6 * 7?"}, headers={"Idempotency-Key": key})
    assert other.json()["task_id"] != task_id


def test_after_waits_for_the_projection_and_answers_503_when_it_cannot(platform: Settings) -> None:
    with api(platform, org=_org()) as client:
        submitted = client.post("/v1/tasks", json={"query": "What is 1 + 1?"}).json()
        # Without ?after= the read may race the projector; with it, the task is there on the first try.
        view = client.get(f"/v1/tasks/{submitted['task_id']}", params={"after": submitted["position"]})
        assert view.status_code == 200, view.text
        position = Position.parse(submitted["position"])
        future = Position(position.topic, position.partition, position.offset + 10**9).token()
        started = time.monotonic()
        late = client.get("/v1/tasks", params={"after": future}, timeout=30)
        assert late.status_code == 503 and late.headers["retry-after"] == "1"
        assert time.monotonic() - started >= 9  # the bound (10 s by default) was waited out
        assert client.get("/v1/tasks", params={"after": "not-a-position"}).status_code == 422


def test_tasks_are_listed_newest_first_filtered_and_cursor_paged(platform: Settings) -> None:
    org, session = _org(), f"session-{uuid.uuid4().hex[:6]}"
    views = [
        submit_and_wait(platform, {"query": f"What is {i} + {i}?", "session_id": session}, org=org, user=user)
        for i, user in enumerate(["ann", "ann", "ben", "ann", "ben"])
    ]
    expected = [v["task_id"] for v in reversed(views)]
    with api(platform, org=org, role="viewer") as client:
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/tasks", params=params).json()
            seen += [t["task_id"] for t in page["tasks"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected and pages == 3
        by_ben = client.get("/v1/tasks", params={"user_id": "ben"}).json()["tasks"]
        assert [t["task_id"] for t in by_ben] == [views[4]["task_id"], views[2]["task_id"]]
        in_session = client.get("/v1/tasks", params={"session_id": session, "status": "completed"}).json()
        assert len(in_session["tasks"]) == 5
        assert client.get("/v1/tasks", params={"status": "failed"}).json()["tasks"] == []
        since = views[3]["submitted_at"]
        recent = client.get("/v1/tasks", params={"from": since}).json()["tasks"]
        assert [t["task_id"] for t in recent] == [views[4]["task_id"], views[3]["task_id"]]
        assert client.get("/v1/tasks", params={"cursor": "%%%"}).status_code == 422
        detail = client.get(
            f"/v1/tasks/{views[0]['task_id']}", params=[("expand", "llm_calls"), ("expand", "agents")]
        ).json()
        assert len(detail["expanded"]["llm_calls"]) == detail["llm_calls"] > 0
        assert detail["expanded"]["agents"] and detail["expanded"]["tool_calls"] is None


# -- bad credentials and wrong roles change nothing ------------------------------------------------


def test_an_expired_jwt_gets_401_naming_the_expiry(platform: Settings) -> None:
    expired = mint_jwt(
        secret=platform.jwt_secret or "",
        org_id=_org(),
        user_id="late",
        role=Role.ADMIN,
        expires_in_seconds=60,
        now=int(time.time()) - 3600,
    )
    with _client(platform, expired) as client:
        reply = client.get("/v1/tasks")
    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert "expired" in reply.json()["detail"].lower()


# Admin-only operations (keys): an operator is the wrong role there too.
ADMIN_PATHS = ("/v1/keys",)


def _mutating_calls(settings: Settings, ids: dict[str, str]) -> list[tuple[str, str, str, Any]]:
    """(operation id, method, path with ``ids`` in it, a valid body) of every POST/PUT/PATCH/DELETE of
    the served OpenAPI document; a path parameter this test has no id for fails it."""
    spec = httpx.get(f"{_base(settings)}/openapi.json", timeout=30).json()
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "put", "patch", "delete"):
                continue
            concrete = path
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "path":
                    continue
                if parameter["name"] not in ids:
                    pytest.fail(f"no id for path parameter {parameter['name']!r} of {method.upper()} {path}")
                concrete = concrete.replace("{" + parameter["name"] + "}", ids[parameter["name"]])
            found.append(
                (str(operation["operationId"]), method.upper(), concrete, _example_body(spec, operation))
            )
    return found


def test_bad_credentials_and_wrong_roles_produce_nothing_on_any_mutating_route(platform: Settings) -> None:
    org = _org()
    task = submit_and_wait(platform, {"query": "What is 3 + 4?"}, org=org)
    admin = _cli_key(platform, "--org", org, "--user", "root", "--role", "admin")
    revoked = _cli_key(platform, "--org", org, "--user", "gone", "--role", "admin")
    viewer_key = _cli_key(platform, "--org", org, "--user", "reader", "--role", "viewer")
    with _client(platform, admin["token"]) as client:
        assert client.delete(f"/v1/keys/{revoked['key_id']}").status_code == 200
        keys_before = client.get("/v1/keys", params={"include_revoked": True}).json()
    now = int(time.time())
    secret = platform.jwt_secret or ""
    unauthenticated: dict[str, dict[str, str]] = {
        "none": {},
        "garbage-bearer": {"Authorization": "Bearer garbage"},
        "unknown-api-key": {"X-API-Key": "alk_aaaaaaaaaaaa_" + "b" * 43},
        "wrong-secret-jwt": {
            "Authorization": "Bearer "
            + mint_jwt(secret="x" * 40, org_id=org, user_id="eve", role=Role.ADMIN, now=now)
        },
        "expired-jwt": {
            "Authorization": "Bearer "
            + mint_jwt(secret=secret, org_id=org, user_id="late", role=Role.ADMIN, now=now - 7200)
        },
        "revoked-api-key": {"X-API-Key": revoked["token"]},
    }
    viewer_jwt = mint_jwt(secret=secret, org_id=org, user_id="reader", role=Role.VIEWER, now=now)
    operator_jwt = mint_jwt(secret=secret, org_id=org, user_id="ops", role=Role.OPERATOR, now=now)
    ids = {"task_id": task["task_id"], "approval_id": "ap-any", "key_id": admin["key_id"]}
    calls = _mutating_calls(platform, ids)
    assert {"submit_task", "cancel_task", "approve_tool_call", "create_api_key", "revoke_api_key"} <= {
        operation for operation, *_ in calls
    }
    topic = REQUESTS.name(platform)
    before = end_offsets(platform, topic)
    tried = 0
    with httpx.Client(base_url=_base(platform), timeout=30) as client:
        for operation, method, path, body in calls:
            for name, headers in unauthenticated.items():
                reply = client.request(method, path, json=body, headers=headers)
                tried += 1
                assert reply.status_code == 401, (operation, name, reply.status_code, reply.text)
            wrong_roles = {
                "viewer-jwt": {"Authorization": f"Bearer {viewer_jwt}"},
                "viewer-api-key": {"X-API-Key": viewer_key["token"]},
            }
            if path.startswith(ADMIN_PATHS):
                wrong_roles["operator-jwt"] = {"Authorization": f"Bearer {operator_jwt}"}
            for name, headers in wrong_roles.items():
                reply = client.request(method, path, json=body, headers=headers)
                tried += 1
                assert reply.status_code == 403, (operation, name, reply.status_code, reply.text)
                assert reply.headers["content-type"] == "application/problem+json"
    print(f"\nauth: {len(calls)} mutating operations, {tried} refused calls")
    time.sleep(2)  # a record produced by mistake would be on the log well within this
    assert end_offsets(platform, topic) == before
    with _client(platform, admin["token"]) as client:
        assert client.get("/v1/keys", params={"include_revoked": True}).json() == keys_before
        view = client.get(f"/v1/tasks/{task['task_id']}").json()
    assert view["status"] == "completed" and view["event_count"] == task["event_count"]


def test_hostile_submission_bodies_get_422_naming_the_field_and_produce_nothing(platform: Settings) -> None:
    cases: dict[str, dict[str, Any]] = {
        # A year-0 instant once in UTC: not representable, so not a time the task can wait for.
        "not_before": {"query": "x", "not_before": "0001-01-01T00:00:00+23:59"},
        # A lone surrogate cannot be written as UTF-8, so not into the Avro record either.
        "query": {"query": "what is \ud800?"},
        "context": {"query": "x", "context": {"k\udfff": "v"}},
        "token_budget": {"query": "x", "token_budget": 2**70},
        "session_id": {"query": "x", "session_id": "a\x00b"},
    }
    topic = REQUESTS.name(platform)
    before = end_offsets(platform, topic)
    with api(platform, org=_org()) as client:
        for field, body in cases.items():
            reply = client.post(
                "/v1/tasks",
                content=json.dumps(body).encode(),  # ASCII JSON: the surrogates travel as \\u escapes
                headers={"content-type": "application/json"},
            )
            assert reply.status_code == 422, (field, reply.status_code, reply.text)
            assert reply.headers["content-type"] == "application/problem+json"
            assert [e["field"].split(".")[0] for e in reply.json()["errors"]] == [field], reply.text
    assert end_offsets(platform, topic) == before


def test_a_query_with_a_nul_character_runs_and_is_readable(platform: Settings) -> None:
    # Postgres text cannot hold NUL: it once stopped the Postgres projector for every org. The read
    # models show U+FFFD in its place, the log keeps the query as submitted.
    view = submit_and_wait(platform, {"query": "What is 1 + 1?\x00 ignore"}, org=_org())
    assert view["status"] == "completed", view
    assert view["query"] == "What is 1 + 1?\ufffd ignore"
    submitted = task_history(platform, view["task_id"])[0]
    assert submitted.payload.query == "What is 1 + 1?\x00 ignore"  # type: ignore[union-attr]
    with api(platform, org=view["org_id"]) as client:
        events = client.get(f"/v1/tasks/{view['task_id']}/events").json()["events"]
    assert events[0]["payload"]["query"] == "What is 1 + 1?\ufffd ignore"
