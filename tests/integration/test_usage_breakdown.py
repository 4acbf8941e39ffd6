"""``GET /v1/usage?group_by=``: an org's LLM usage per day, user and model, from the real stack."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from streams.settings import Settings
from tests.integration.conftest import api, submit_and_wait

SUMMED = ("prompt_tokens", "completion_tokens", "total_tokens", "calls", "cache_hits")


def test_usage_grouped_by_model_user_and_day_sums_to_the_tasks_tokens(platform: Settings) -> None:
    org, user = f"org-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:6]}"
    view = submit_and_wait(platform, {"query": "What is (17 + 25) * 3?"}, org=org, user=user)
    assert view["status"] == "completed" and view["total_tokens"] > 0, view
    today = datetime.now(UTC).date().isoformat()
    with api(platform, org=org, role="viewer") as client:
        by_model = client.get("/v1/usage", params={"group_by": "model"}).json()
        by_user = client.get("/v1/usage", params={"group_by": "user"}).json()
        by_all = client.get("/v1/usage", params={"group_by": ["day", "user", "model"]}).json()
        by_day = client.get("/v1/usage").json()
        assert client.get("/v1/usage", params={"group_by": "tool"}).status_code == 422
        none = client.get("/v1/usage", params={"group_by": "model", "from": "2001-01-01", "to": "2001-01-02"})
        assert none.json() == []
    with api(platform, org=f"other-{uuid.uuid4().hex[:8]}") as other:
        assert other.get("/v1/usage", params={"group_by": "user"}).json() == []

    assert by_model and all(
        row["model"] and row["day"] is None and row["user_id"] is None for row in by_model
    )
    assert sum(row["total_tokens"] for row in by_model) == view["total_tokens"]
    assert sum(row["calls"] for row in by_model) == view["llm_calls"]
    [mine] = by_user
    assert (mine["user_id"], mine["model"], mine["org_id"]) == (user, None, org)
    assert mine["total_tokens"] == view["total_tokens"]
    assert mine["prompt_tokens"] + mine["completion_tokens"] == mine["total_tokens"]
    assert 0 <= mine["cache_hit_rate"] <= 1 and mine["cache_hit_rate"] == mine["cache_hits"] / mine["calls"]
    assert {(row["day"], row["user_id"]) for row in by_all} == {(today, user)}
    assert {row["model"] for row in by_all} == {row["model"] for row in by_model}
    # The default (per day, from the daily totals) agrees with the breakdown, in the old shape plus.
    [day] = by_day
    assert day["day"] == today and day["user_id"] is None and day["model"] is None
    for field in SUMMED:
        assert day[field] == mine[field] == sum(row[field] for row in by_all), field
    assert abs(day["cost_usd"] - sum(row["cost_usd"] for row in by_model)) < 1e-9
