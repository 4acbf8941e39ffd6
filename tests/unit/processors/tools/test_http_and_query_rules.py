"""Pure rules of the fetch allow-list and of the read-model query language."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql

from processors.tools.http_fetch import HttpFetchDenied, check_url
from processors.tools.read_model import TOOL as READ_MODEL
from processors.tools.read_model import build_query, render
from processors.tools.registry import ToolRegistry


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("https://docs.example.org/page", ["docs.example.org"]),
        ("http://DOCS.example.org./x", ["docs.example.org"]),
        ("http://127.0.0.1:8123/", ["127.0.0.1:8123"]),
        ("https://api.example.org/v1", ["api.example.org:443"]),
    ],
)
def test_allowed_urls_pass(url: str, allow: list[str]) -> None:
    assert check_url(url, allow).scheme in ("http", "https")


@pytest.mark.parametrize(
    ("url", "allow", "message"),
    [
        ("https://docs.example.org/", [], "the allow-list is empty"),
        ("https://evil.example.org/", ["docs.example.org"], "host evil.example.org:443"),
        ("https://docs.example.org.evil.test/", ["docs.example.org"], "not on the fetch allow-list"),
        ("http://127.0.0.1:8124/", ["127.0.0.1:8123"], "host 127.0.0.1:8124"),
        ("http://localhost:8123/", ["127.0.0.1:8123"], "host localhost:8123"),
        ("file:///etc/passwd", ["docs.example.org"], "scheme 'file'"),
        ("ftp://docs.example.org/", ["docs.example.org"], "scheme 'ftp'"),
        ("docs.example.org/page", ["docs.example.org"], "scheme ''"),
        ("https://user:pw@docs.example.org/", ["docs.example.org"], "carries credentials"),
    ],
)
def test_other_urls_are_denied(url: str, allow: list[str], message: str) -> None:
    with pytest.raises(HttpFetchDenied) as raised:
        check_url(url, allow)
    assert message in str(raised.value)
    assert "pw@" not in str(raised.value)


def _text(query: sql.Composed) -> str:
    return query.as_string(None)


def test_every_query_is_pinned_to_the_task_and_org() -> None:
    for arguments in (
        {"view": "task"},
        {"view": "events"},
        {"view": "events", "event_types": ["TaskCompleted"]},
    ):
        query = build_query(arguments, task_id="t-1", org_id="acme", max_rows=50)
        assert "task_id = %(task_id)s AND org_id = %(org_id)s" in _text(query.statement)
        assert (query.params["task_id"], query.params["org_id"]) == ("t-1", "acme")


def test_filters_become_parameters_never_sql() -> None:
    hostile = "x' OR 1=1 --"
    query = build_query(
        {"view": "events", "event_types": [hostile], "after_sequence": 3, "limit": 500, "order": "desc"},
        task_id="t-1",
        org_id="acme",
        max_rows=50,
    )
    text = _text(query.statement)
    assert hostile not in text
    assert query.params["event_types"] == [hostile]
    assert "event_type = ANY(%(event_types)s)" in text and "sequence > %(after_sequence)s" in text
    assert text.endswith("ORDER BY sequence DESC LIMIT %(limit)s")
    assert query.params["limit"] == 50


@pytest.mark.parametrize(
    "arguments",
    [
        {"view": "task_executions"},
        {"view": "events", "sql": "DELETE FROM task_events"},
        {"view": "events", "event_types": ["x' OR 1=1 --"]},
        {"view": "events", "limit": 101},
        {"view": "events", "order": "sideways"},
        {"view": "events", "task_id": "someone-elses"},
    ],
)
def test_the_query_language_refuses_anything_else(arguments: dict[str, Any]) -> None:
    registry = ToolRegistry()
    registry.register(READ_MODEL)
    with pytest.raises(ValueError, match="arguments of tool 'read_model' are invalid"):
        registry.validate("read_model", arguments)


def test_render_leaves_out_the_conversation_copies() -> None:
    rows = [
        {"sequence": 1, "event_type": "LlmCallRequested", "payload": {"step": 1, "messages_json": "[...]"}}
    ]
    assert '"messages_json"' not in render("events", rows)
    assert '"step": 1' in render("events", rows)
    assert render("task", []) == "null"
