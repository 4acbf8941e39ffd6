"""Requests as Cedar sees them: arguments as Cedar values, URL facts, what cannot be represented."""

from __future__ import annotations

from typing import Any

import pytest

from processors.policy.cedar_request import (
    UnrepresentableArgumentError,
    cedar_call,
    cedar_value,
    url_facts,
)
from tests.unit.processors.policy.helpers import request


def test_the_request_shape() -> None:
    call = cedar_call(request("viewer", "calculator", {"expression": "1"}))

    assert call.request == {
        "principal": {"type": "User", "id": "alice"},
        "action": {"type": "Action", "id": "call"},
        "resource": {"type": "Tool", "id": "calculator"},
        "context": {"task": "task-1", "arguments": {"expression": "1"}, "urls": {}},
    }
    assert call.entities == [
        {
            "uid": {"type": "User", "id": "alice"},
            "attrs": {"org": "acme"},
            "parents": [{"type": "Role", "id": "viewer"}],
        }
    ]


def test_a_caller_without_a_role_is_in_no_role() -> None:
    assert cedar_call(request(None, "calculator")).entities[0]["parents"] == []


@pytest.mark.parametrize(
    ("value", "cedar"),
    [
        ("text", "text"),
        (True, True),
        (-(2**63), -(2**63)),
        (2**63 - 1, 2**63 - 1),
        (30.0, 30),
        (1.5, {"__extn": {"fn": "decimal", "arg": "1.5000"}}),
        (-0.00004, {"__extn": {"fn": "decimal", "arg": "-0.0000"}}),
        (0.12345, {"__extn": {"fn": "decimal", "arg": "0.1234"}}),
        ([1, None, "a", [True]], [1, "a", [True]]),
        ({"a": None, "b": {"c": 1}}, {"b": {"c": 1}}),
    ],
)
def test_json_values_become_cedar_values(value: Any, cedar: Any) -> None:
    assert cedar_value(value, "arguments.x") == cedar


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**63, r"arguments\.x: integer 9223372036854775808 is outside"),
        (-(2**63) - 1, r"outside Cedar's 64-bit range"),
        (float("inf"), r"number inf is outside Cedar's range"),
        (float("nan"), r"number nan"),
        (1e15 + 0.5, r"number 1000000000000000.5 is outside Cedar's range"),
        ({"__extn": {"fn": "ip", "arg": "127.0.0.1"}}, r"key '__extn'"),
        ({"ok": [{"__entity": {"type": "Role", "id": "admin"}}]}, r"arguments\.x\.ok\[0\]: key '__entity'"),
        (
            [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
            r"nested deeper than 32",
        ),
    ],
)
def test_values_cedar_cannot_hold_faithfully_are_refused(value: Any, message: str) -> None:
    with pytest.raises(UnrepresentableArgumentError, match=message):
        cedar_value(value, "arguments.x")


@pytest.mark.parametrize(
    ("url", "fact"),
    [
        (
            "https://docs.python.org/3/",
            {"scheme": "https", "host": "docs.python.org", "port": 443, "path": "/3/"},
        ),
        ("HTTP://Example.COM.", {"scheme": "http", "host": "example.com", "port": 80, "path": "/"}),
        (
            "https://example.com:8443/x?y#z",
            {"scheme": "https", "host": "example.com", "port": 8443, "path": "/x"},
        ),
        ("https://[::1]/", {"scheme": "https", "host": "::1", "port": 443, "path": "/"}),
        ("ftp://example.com/f", {"scheme": "ftp", "host": "example.com", "path": "/f"}),
        ("https://user:pw@example.com/", None),
        ("https://evil.example\\@example.com/", None),
        ("https://example.com/a b", None),
        ("https://example.com\t/", None),
        ("https://example.com:99999/", None),
        ("https://[::1/", None),
        ("https:///path-only", None),
        ("no scheme here", None),
    ],
)
def test_url_facts_only_for_plain_urls(url: str, fact: dict[str, Any] | None) -> None:
    assert url_facts({"url": url}).get("url") == fact


def test_url_facts_cover_every_top_level_string_argument() -> None:
    facts = url_facts({"source": "https://a.example/", "target": "https://b.example/", "n": 1, "nested": {}})

    assert {name: fact["host"] for name, fact in facts.items()} == {
        "source": "a.example",
        "target": "b.example",
    }
