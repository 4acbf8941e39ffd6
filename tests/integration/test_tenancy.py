"""Tenancy: another org's caller learns nothing of an org's resources and changes nothing of them.

Org A gets a completed task (LLM and tool calls, a session), a task waiting for a tool-call approval,
a failed task whose submission was dead-lettered, and an API key. Then every operation of the
served OpenAPI document (read at run time, so a new endpoint is covered without touching this file)
is called with each of org B's credentials (an operator JWT, an admin JWT, an admin API key), org
A's ids in its path and query parameters and headers claiming org A. A route naming an org-A
resource answers 404; no answer is a 5xx, and no answer carries anything of org A; the requests
topic does not move, org A's histories do not grow and its approval stays pending. A submission
whose body tries to act for org A is refused with 422, and an accepted one carries the caller's
org, user and role, whatever the headers say.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from streams.settings import Settings
from streams.topics import REQUESTS
from tests.fixtures.platform import ScriptedPlatform
from tests.fixtures.scripted_llm import Step
from tests.integration.conftest import TASK_TIMEOUT, api, bearer, task_history, wait_for
from tests.integration.test_produce import end_offsets, run_cli

PYTHON_PRINT = Step(tool_calls=(("python", {"code": "print(6 * 7)"}),))
DONE = Step(content="done")
# Headers a naive gateway might trust: the org, user and role are the credential's, never these.
CLAIMS_ORG_A = ("X-Org-Id", "X-Org", "X-User-Id", "X-Role", "X-Tenant")
# Routes that answer everyone, with no org in them: checked for leaks like the others.
UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics"}
# Operations that create something of the caller's own org: they may write; the rest may not.
OWN_ORG_WRITES = {"submit_task", "create_api_key"}


@dataclass(frozen=True)
class OrgA:
    name: str
    user: str
    marker: str  # in its queries: must appear in no answer to org B
    completed_task: str
    waiting_task: str
    approval_id: str
    session_id: str
    key_id: str
    failed_task: str

    def secrets(self) -> list[str]:
        return [
            self.name,
            self.user,
            self.marker,
            self.completed_task,
            self.waiting_task,
            self.approval_id,
            self.session_id,
            self.key_id,
            self.failed_task,
        ]


def _script(platform: ScriptedPlatform, *steps: Step) -> str:
    name = f"s-{uuid.uuid4().hex[:10]}"
    platform.llm.scripts[name] = list(steps)
    return name


def _events(settings: Settings, task_id: str, org: str) -> list[dict[str, Any]]:
    with api(settings, org=org) as client:
        reply = client.get(f"/v1/tasks/{task_id}/events", params={"limit": 1000})
    return list(reply.json()["events"]) if reply.status_code == 200 else []


@pytest.fixture(scope="module")
def org_a(scripted_platform: ScriptedPlatform) -> OrgA:
    settings = scripted_platform.settings
    name, user = f"org-a-{uuid.uuid4().hex[:8]}", f"alice-{uuid.uuid4().hex[:8]}"
    marker = f"zebra{uuid.uuid4().hex[:12]}"
    session = f"sess-{uuid.uuid4().hex[:8]}"

    # A completed task with LLM and tool calls, in a session.
    script = _script(scripted_platform, PYTHON_PRINT, DONE)
    with api(settings, org=name, user=user) as client:
        submitted = client.post("/v1/tasks", json={"query": f"{marker} [[{script}]]", "session_id": session})
    assert submitted.status_code == 202, submitted.text
    completed = str(submitted.json()["task_id"])

    # A task produced for a viewer: the python call waits for a human approval.
    waiting = f"tenancy-{uuid.uuid4()}"
    waiting_script = _script(scripted_platform, PYTHON_PRINT, DONE)
    data = {
        "query": f"{marker} waiting [[{waiting_script}]]",
        "user_role": "viewer",
        "session_id": session,
        "envelope": {"task_id": waiting, "org_id": name, "user_id": user},
    }
    produced = run_cli(settings, "TaskSubmitted", "--data", json.dumps(data))
    assert produced.returncode == 0, produced.stderr

    def requested() -> dict[str, Any] | None:
        found = [e for e in _events(settings, waiting, name) if e["event_type"] == "ApprovalRequested"]
        return found[0]["payload"] if found else None

    approval = wait_for(requested, TASK_TIMEOUT, f"an approval request in {waiting}")

    # A task whose provider fails past the retry limit: its submission is dead-lettered for org A.
    failing = _script(scripted_platform, Step(content="never", fail=10))
    with api(settings, org=name, user=user) as client:
        parked = client.post("/v1/tasks", json={"query": f"{marker} failing [[{failing}]]"})
    assert parked.status_code == 202, parked.text

    def dead_lettered() -> bool:
        with api(settings, org=name, user=user) as client:
            listed = client.get("/v1/dead-letters").json()["dead_letters"]
        return any(parked.json()["task_id"] in json.dumps(entry) for entry in listed)

    # Org A sees its dead letter: so org B's empty view below is a refusal, not an empty table.
    wait_for(dead_lettered, TASK_TIMEOUT, "org A's dead letter to be listed for org A")

    def ended() -> bool:
        with api(settings, org=name) as client:
            view = client.get(f"/v1/tasks/{completed}").json()
        return view.get("status") == "completed" and view["event_count"] == view["last_sequence"] + 1

    wait_for(ended, TASK_TIMEOUT, f"task {completed} to complete")
    with api(settings, org=name, user="root-a", role="admin") as client:
        key = client.post("/v1/keys", json={"user_id": user, "role": "operator", "name": marker})
    assert key.status_code == 201, key.text
    return OrgA(
        name=name,
        user=user,
        marker=marker,
        completed_task=completed,
        waiting_task=waiting,
        approval_id=str(approval["approval_id"]),
        session_id=session,
        key_id=str(key.json()["key_id"]),
        failed_task=str(parked.json()["task_id"]),
    )


@pytest.fixture(scope="module")
def org_b_credentials(scripted_platform: ScriptedPlatform) -> dict[str, dict[str, str]]:
    """Org B's credentials, as the Authorization/X-API-Key headers each is sent with."""
    settings = scripted_platform.settings
    org_b = f"org-b-{uuid.uuid4().hex[:8]}"
    admin_jwt = bearer(settings, org=org_b, user="mallory", role="admin")
    with httpx.Client(base_url=_base(settings), timeout=15) as client:
        key = client.post(
            "/v1/keys",
            json={"user_id": "mallory-key", "role": "admin"},
            headers={"Authorization": f"Bearer {admin_jwt}"},
        )
    assert key.status_code == 201, key.text
    return {
        "operator-jwt": {
            "Authorization": f"Bearer {bearer(settings, org=org_b, user='mallory', role='operator')}"
        },
        "admin-jwt": {"Authorization": f"Bearer {admin_jwt}"},
        "admin-api-key": {"X-API-Key": str(key.json()["token"])},
    }


def _base(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


# -- building each call from the OpenAPI document ----------------------------------------------------


@dataclass(frozen=True)
class Call:
    operation: str
    method: str
    path: str  # with org A's ids in it
    params: dict[str, Any]
    body: Any
    names_org_a: bool  # a path parameter is an org-A resource
    queries_org_a: bool  # a query parameter is one of org A's ids
    unknown_ids: str  # the same path with ids of nothing: what a probe for existence would compare


def _path_values(org: OrgA, path: str) -> dict[str, str]:
    """Org A's id for each path parameter kind; an unknown kind fails (the test must learn it)."""
    values = {
        # An approval's routes name the task it belongs to; elsewhere the completed task has most.
        "task_id": org.waiting_task if "{approval_id}" in path else org.completed_task,
        "approval_id": org.approval_id,
        "session_id": org.session_id,
        "key_id": org.key_id,
    }
    return values


def _query_value(org: OrgA, name: str, schema: dict[str, Any], required: bool) -> Any:
    """Org A's value for a query parameter that names a resource; a harmless one for the rest."""
    by_name: dict[str, Any] = {
        "task_id": org.completed_task,
        "session_id": org.session_id,
        "user_id": org.user,
        "q": org.marker,
        "a": org.completed_task,
        "b": org.waiting_task,
        "from": 0,
        "to": 1,
        "at": 1,
        "max_seconds": 1,
    }
    # Optional ones that filter by org A's ids, or that a route needs to get past its own checks.
    optional = {"task_id", "session_id", "user_id", "q", "at", "max_seconds"}
    if name in by_name and (required or name in optional):
        # "from"/"to" are sequences on the diff route (required there) and dates elsewhere (left out).
        return by_name[name]
    if required:
        pytest.fail(f"required query parameter {name!r} ({schema}) is unknown to the tenancy test")
    return None


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _example_body(spec: dict[str, Any], operation: dict[str, Any]) -> Any:
    """A valid body: the schema's first example, else its required fields filled in by type."""
    content = operation.get("requestBody", {}).get("content", {})
    if not content:
        return None
    schema = _resolve(spec, content["application/json"]["schema"])
    if schema.get("examples"):
        return schema["examples"][0]
    body: dict[str, Any] = {}
    for name in schema.get("required", []):
        field = _resolve(spec, schema["properties"][name])
        kind = field.get("type")
        if kind == "string":
            body[name] = "tenancy-check"
        elif kind == "integer":
            body[name] = max(1, int(field.get("minimum", 1)))
        elif kind == "boolean":
            body[name] = True
        else:
            pytest.fail(f"cannot build a {name!r} of {field} for {operation.get('operationId')}")
    return body


def calls(spec: dict[str, Any], org: OrgA) -> Iterator[Call]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            values = _path_values(org, path)
            concrete, unknown, names_org_a, params = path, path, False, {}
            for parameter in operation.get("parameters", []):
                name, where = parameter["name"], parameter["in"]
                if where == "path":
                    if name not in values:
                        pytest.fail(
                            f"path parameter {name!r} of {method.upper()} {path} is unknown to this test"
                        )
                    concrete = concrete.replace("{" + name + "}", values[name])
                    unknown = unknown.replace("{" + name + "}", f"nothing-{uuid.uuid4().hex[:12]}")
                    names_org_a = True
                elif where == "query":
                    value = _query_value(
                        org, name, parameter.get("schema", {}), parameter.get("required", False)
                    )
                    if value is not None:
                        params[name] = value
            assert "{" not in concrete, concrete
            yield Call(
                operation=str(operation.get("operationId")),
                method=method.upper(),
                path=concrete,
                params=params,
                body=_example_body(spec, operation),
                names_org_a=names_org_a,
                queries_org_a=bool(set(map(str, params.values())) & set(org.secrets())),
                unknown_ids=unknown,
            )


# -- the matrix ----------------------------------------------------------------------------------


def _history_sizes(settings: Settings, org: OrgA) -> dict[str, int]:
    return {task: len(task_history(settings, task)) for task in (org.completed_task, org.waiting_task)}


def test_another_orgs_credentials_reach_nothing_of_an_org_on_any_route(
    scripted_platform: ScriptedPlatform, org_a: OrgA, org_b_credentials: dict[str, dict[str, str]]
) -> None:
    settings = scripted_platform.settings
    with httpx.Client(base_url=_base(settings), timeout=30) as client:
        spec = client.get("/openapi.json").json()
    matrix = list(calls(spec, org_a))
    assert {c.operation for c in matrix} >= {"get_task", "cancel_task", "approve_tool_call", "fork_task"}
    # Org A's own lists and search show its resources: org B's answers below have something to leak.
    with api(settings, org=org_a.name, user=org_a.user) as client:

        def own_views() -> bool:
            seen = {
                route: client.get(route, params=params).text
                for route, params in (
                    ("/v1/tasks", {"session_id": org_a.session_id}),
                    ("/v1/search", {"q": org_a.marker}),
                    ("/v1/approvals", {}),
                    ("/v1/dead-letters", {}),
                )
            }
            return (
                org_a.completed_task in seen["/v1/tasks"]
                and org_a.completed_task in seen["/v1/search"]
                and org_a.approval_id in seen["/v1/approvals"]
                and org_a.failed_task in seen["/v1/dead-letters"]
            )

        wait_for(own_views, TASK_TIMEOUT, "org A's lists and search to show its resources")
    requests_topic = REQUESTS.name(settings)
    offsets_before = end_offsets(settings, requests_topic)
    histories_before = _history_sizes(settings, org_a)
    hostile_headers = {name: org_a.name for name in CLAIMS_ORG_A} | {"X-Role": "admin"}

    tried: list[tuple[str, str, int]] = []
    problems: list[str] = []
    with httpx.Client(base_url=_base(settings), timeout=30) as client:
        for call in matrix:
            if call.operation in OWN_ORG_WRITES:
                continue  # they write for org B by design: checked in the test below
            for credential, auth in org_b_credentials.items():
                reply = client.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.body,
                    headers={**hostile_headers, **auth},
                )
                tried.append((call.operation, credential, reply.status_code))
                where = f"{call.method} {call.path} {call.params} as {credential}: {reply.status_code}"
                if reply.status_code >= 500:
                    problems.append(f"{where} (server error) {reply.text[:200]}")
                if call.names_org_a and reply.status_code != 404:
                    # Refused before the lookup (the wrong role, say) is no oracle only if an id of
                    # nothing gets the very same answer.
                    probe = client.request(
                        call.method,
                        call.unknown_ids,
                        params=call.params,
                        json=call.body,
                        headers={**hostile_headers, **auth},
                    )
                    same = (probe.status_code, probe.json().get("detail")) == (
                        reply.status_code,
                        reply.json().get("detail"),
                    )
                    if reply.status_code not in (403, 422) or not same:
                        problems.append(
                            f"{where}, expected 404 {reply.text[:200]} (unknown ids: {probe.text})"
                        )
                if not call.names_org_a and (
                    reply.status_code == 401 or (reply.status_code == 404 and not call.queries_org_a)
                ):
                    problems.append(
                        f"{where}: an org-less route refused a valid credential {reply.text[:200]}"
                    )
                text = reply.text
                # A 404 may echo the id the caller sent; nothing else of org A may appear anywhere.
                echoed = set(call.path.split("/")) | {str(v) for v in call.params.values()}
                leaked = [s for s in org_a.secrets() if s in text and s not in echoed]
                if leaked:
                    problems.append(f"{where} leaks {leaked}: {text[:300]}")
    combinations = len(tried)
    routes = len({operation for operation, _, _ in tried})
    print(
        f"\ntenancy matrix: {routes} operations x {len(org_b_credentials)} credentials = {combinations} "
        f"calls (+ {len(OWN_ORG_WRITES)} own-org writes checked separately); answers: "
        f"{sorted({(op, status) for op, _, status in tried})}"
    )
    assert not problems, "\n".join(problems)
    assert combinations == (len(matrix) - len(OWN_ORG_WRITES & {c.operation for c in matrix})) * len(
        org_b_credentials
    )

    # Nothing was requested of org A's tasks, and nothing happened to them.
    time.sleep(2)  # a record produced by mistake would be on the log well within this
    assert end_offsets(settings, requests_topic) == offsets_before
    assert _history_sizes(settings, org_a) == histories_before
    with api(settings, org=org_a.name) as client:
        approvals = client.get(f"/v1/tasks/{org_a.waiting_task}/approvals").json()
        view = client.get(f"/v1/tasks/{org_a.waiting_task}").json()
        keys = client.get(
            "/v1/keys", headers={"Authorization": f"Bearer {bearer(settings, org=org_a.name, role='admin')}"}
        )
    assert [(a["approval_id"], a["status"]) for a in approvals] == [(org_a.approval_id, "pending")]
    assert view["status"] == "running"
    assert org_a.key_id in {k["key_id"] for k in keys.json() if k.get("revoked_at") is None}


def test_a_submission_acts_for_the_callers_org_whatever_the_body_or_headers_say(
    scripted_platform: ScriptedPlatform, org_a: OrgA, org_b_credentials: dict[str, dict[str, str]]
) -> None:
    settings = scripted_platform.settings
    requests_topic = REQUESTS.name(settings)
    before = end_offsets(settings, requests_topic)
    forged_fields = {
        "org": org_a.name,
        "org_id": org_a.name,
        "user": org_a.user,
        "user_id": org_a.user,
        "role": "admin",
        "user_role": "admin",
    }
    auth = org_b_credentials["operator-jwt"]
    with httpx.Client(base_url=_base(settings), timeout=30) as client:
        for field, value in forged_fields.items():
            refused = client.post("/v1/tasks", json={"query": "What is 2 + 2?", field: value}, headers=auth)
            assert refused.status_code == 422, (field, refused.text)
            assert [e["field"] for e in refused.json()["errors"]] == [field], refused.text
        everything = client.post("/v1/tasks", json={"query": "What is 2 + 2?", **forged_fields}, headers=auth)
        assert everything.status_code == 422
        assert sorted(e["field"] for e in everything.json()["errors"]) == sorted(forged_fields)
        assert end_offsets(settings, requests_topic) == before  # nothing produced for a refused body

        # Accepted, with headers claiming org A's admin: the event is the credential's.
        hostile = {name: org_a.name for name in CLAIMS_ORG_A} | {"X-Role": "admin", "X-User-Id": org_a.user}
        accepted = client.post("/v1/tasks", json={"query": "What is 2 + 2?"}, headers={**hostile, **auth})
        assert accepted.status_code == 202, accepted.text
    task_id = str(accepted.json()["task_id"])
    submitted = task_history(settings, task_id)[0]
    org_b = _org_of(auth["Authorization"])
    assert submitted.event_type == "TaskSubmitted"
    assert (submitted.envelope.org_id, submitted.envelope.user_id) == (org_b, "mallory")
    assert submitted.payload.user_role == "operator"  # type: ignore[union-attr]
    with api(settings, org=org_a.name) as client:
        assert client.get(f"/v1/tasks/{task_id}").status_code == 404
        listed = client.get("/v1/tasks", params={"limit": 100}).json()["tasks"]
    assert task_id not in {t["task_id"] for t in listed}


def _org_of(authorization: str) -> str:
    import base64

    payload = authorization.removeprefix("Bearer ").split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["org"])
