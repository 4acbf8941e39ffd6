"""Re-execution of live tasks read back from Kafka: the CLI (one task, --all) and the REST endpoint."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.settings import Settings
from tests.integration.conftest import api
from tests.integration.test_produce import AGENTLOG, _cli_env


def _reexecute(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTLOG), "reexecute", *args],
        env=_cli_env(settings),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_a_live_task_reexecuted_from_kafka_passes(platform: Settings, completed_task: dict[str, Any]) -> None:
    task_id = completed_task["task_id"]
    done = _reexecute(platform, task_id, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(done.stdout)
    [report] = body["reports"]
    assert (report["task_id"], report["outcome"]) == (task_id, "passed")
    assert report["events"] == completed_task["event_count"] and report["decisions"] >= 2


def test_every_task_on_the_log_reexecutes(platform: Settings, completed_task: dict[str, Any]) -> None:
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    done = _reexecute(platform, "--all", "--since", since, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(done.stdout)
    assert body["passed"] and not body["interrupted"]
    assert completed_task["task_id"] in {r["task_id"] for r in body["reports"]}


def test_an_unknown_task_is_a_usage_error(platform: Settings) -> None:
    assert _reexecute(platform, "no-such-task").returncode == 2


def test_the_rest_endpoint_reexecutes_for_operators_of_the_org(
    platform: Settings, completed_task: dict[str, Any]
) -> None:
    url = f"/v1/tasks/{completed_task['task_id']}/reexecute"
    with api(platform) as client:
        reply = client.post(url)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outcome"] == "passed" and reply.json()["divergence"] is None
    with api(platform, org="other-org") as client:
        assert client.post(url).status_code == 404
    with api(platform, role="viewer") as client:
        assert client.post(url).status_code == 403
