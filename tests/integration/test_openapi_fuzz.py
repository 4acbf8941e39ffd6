"""Schemathesis against the served OpenAPI document: generated requests (valid and invalid) to every
operation, as an admin of a fresh org; no answer may be a 500 or differ from what the document says
(status codes, content types, response schemas)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from streams.settings import Settings
from tests.integration.test_api_auth import _cli_key

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


def test_generated_requests_find_no_server_error_and_no_schema_violation(
    platform: Settings, tmp_path: Path
) -> None:
    key = _cli_key(
        platform,
        "--org",
        f"fuzz-{uuid.uuid4().hex[:8]}",
        "--user",
        "fuzzer",
        "--role",
        "admin",
        # The run is hundreds of requests a second; the rate limit has its own test.
        "--rate-per-second",
        "10000",
        "--rate-burst",
        "100000",
    )
    base = f"http://{platform.api_host}:{platform.api_port}"
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base}/openapi.json",
            "--header",
            f"Authorization: Bearer {key['token']}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--seed",
            "20261122",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            # Live streams stay open until their task ends; they have their own tests.
            "--exclude-path-regex",
            "/(stream|ws)$",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            "--generation-database",
            "none",
            "--no-color",
        ],
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    (tmp_path / "output.txt").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-12_000:] + done.stderr[-3_000:]
    summary = json.loads(report.read_text()) if report.exists() else {}
    assert summary, f"schemathesis wrote no report; output:\n{done.stdout[-4000:]}"
