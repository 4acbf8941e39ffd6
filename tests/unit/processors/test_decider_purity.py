"""The pure core imports no I/O library: the decider, its state and planning, the scheduler."""

from __future__ import annotations

import subprocess
import sys

PURE = (
    "processors.task.decider",
    "processors.task.state",
    "processors.task.commands",
    "processors.task.planning",
    "processors.task.history",
    "processors.task.retry",
    "processors.task.scheduler",
    "projections.task_view",
)
IO_LIBRARIES = (
    "aiokafka",
    "faust",
    "openai",
    "psycopg",
    "redis",
    "elasticsearch",
    "httpx",
    "aiohttp",
)


def test_pure_modules_import_no_io_library() -> None:
    # A fresh interpreter: what the pure modules pull in, and nothing the test runner loaded.
    probe = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in PURE)
        + f"print(','.join(m for m in {IO_LIBRARIES!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"pure modules imported I/O libraries: {loaded}"
