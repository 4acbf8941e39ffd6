"""How a sandboxed run is judged, the bubblewrap command line, and the per-task uid (pure parts)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from processors.tools.contract import SandboxLimits
from processors.tools.python_sandbox import (
    SANDBOX_WORKSPACE,
    UID_SPAN,
    SandboxRun,
    bubblewrap_command,
    judge,
    sandbox_uid,
)

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=5)


def _run(verdict: dict[str, Any] | None = None, **fields: Any) -> SandboxRun:
    base = {"exit_code": 0, "signal": None, "cpu_seconds": 0.01}
    return SandboxRun(
        verdict=None if verdict is None and fields.get("timed_out") else {**base, **(verdict or {})}, **fields
    )


@pytest.mark.parametrize(
    ("run", "error_type", "message"),
    [
        (_run(timed_out=True), "SandboxTimeout", "5s wall-clock limit"),
        (
            _run({"exit_code": None, "signal": signal.SIGXCPU, "cpu_seconds": 2.0}),
            "SandboxCpuLimit",
            "2s CPU-time",
        ),
        (
            _run({"exit_code": None, "signal": signal.SIGKILL, "cpu_seconds": 3.0}),
            "SandboxCpuLimit",
            "3.00s used",
        ),
        (_run({"exit_code": None, "signal": signal.SIGXFSZ}), "SandboxFileSizeLimit", "file-size limit"),
        (_run({"exit_code": 1}, reports={"memory": "MemoryError"}), "SandboxMemoryLimit", "memory limit"),
        (_run({"exit_code": 1}, reports={"process_limit": "EAGAIN"}), "SandboxProcessLimit", "32-process"),
        (
            _run({"exit_code": 1}, reports={"network": "socket.connect"}),
            "SandboxNetworkDenied",
            "socket.connect",
        ),
        (
            _run({"exit_code": 0}, reports={"network": "socket.getaddrinfo"}),
            "SandboxNetworkDenied",
            "refused",
        ),
        (
            _run({"exit_code": 1}, reports={"workspace_escape": "open '/etc/x'"}),
            "SandboxWorkspaceEscape",
            "/etc/x",
        ),
        (_run({"exit_code": None, "signal": signal.SIGSEGV}), "SandboxKilled", "SIGSEGV"),
        (
            _run({"exit_code": 3}, stderr=b"Traceback\nValueError: bad"),
            "SandboxProgramError",
            "3: ValueError: bad",
        ),
        (
            _run({"exit_code": 125}, reports={"setup_failed": "EPERM"}),
            "SandboxUnavailable",
            "set-up failed: EPERM",
        ),
        (
            SandboxRun(returncode=1, stderr=b"bwrap: no permission"),
            "SandboxUnavailable",
            "bwrap: no permission",
        ),
    ],
)
def test_each_limit_is_its_own_error_type(run: SandboxRun, error_type: str, message: str) -> None:
    failure = judge(run, LIMITS)
    assert failure is not None
    assert type(failure).__name__ == error_type
    assert message in str(failure)


def test_a_clean_exit_is_no_failure_and_output_is_kept_on_failure() -> None:
    assert judge(_run(stdout=b"42\n"), LIMITS) is None
    failure = judge(_run({"exit_code": 1}, stdout=b"partial", stderr=b"boom", stdout_truncated=True), LIMITS)
    assert failure is not None
    assert failure.output == "partial\n[stdout truncated]\n[stderr]\nboom" and failure.truncated


def test_the_timeout_wins_over_what_the_program_reported() -> None:
    failure = judge(_run(timed_out=True, reports={"network": "x"}), LIMITS)
    assert type(failure).__name__ == "SandboxTimeout"


def test_uids_are_stable_per_task_unprivileged_and_distinct() -> None:
    base = 1_000_000_000
    assert sandbox_uid("task-a", base) == sandbox_uid("task-a", base)
    uids = {sandbox_uid(f"task-{n}", base) for n in range(1000)}
    assert len(uids) == 1000
    assert all(base <= uid < base + UID_SPAN < 2**31 for uid in uids)


def test_the_command_shares_no_namespace_and_binds_only_the_workspace_writable(tmp_path: Path) -> None:
    command = bubblewrap_command("/usr/bin/bwrap", tmp_path, {"uid": 1}, info_fd=7)
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"):
        assert flag in command
    writable = [command[i + 1 : i + 3] for i, arg in enumerate(command) if arg == "--bind"]
    assert writable == [[str(tmp_path), SANDBOX_WORKSPACE]]
    assert command[command.index("--chdir") + 1] == SANDBOX_WORKSPACE
    assert command[command.index("--remount-ro") + 1] == "/"
    assert "--unshare-user" not in command and "--share-net" not in command
    capabilities = [command[i + 1] for i, arg in enumerate(command) if arg == "--cap-add"]
    assert capabilities == ["CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH"]
    assert command[-4:-2] == ["-S", "-c"] and command[-1] == '{"uid": 1}'
