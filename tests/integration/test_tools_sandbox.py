"""The python tool's sandbox, with real processes: each limit stops the program and is recorded.

Needs bubblewrap (``bwrap``) and root, as the platform's workers have; without them every call
here fails with SandboxUnavailable, and so do these tests.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.tools.contract import SandboxLimits, ToolContext, ToolLimits
from processors.tools.execute import ToolOutcome, execute
from processors.tools.python_sandbox import sandbox_uid
from processors.tools.registry import build_registry

REGISTRY = build_registry(plugins=[])
LIMITS = SandboxLimits(
    cpu_seconds=1,
    wall_seconds=20,  # generous: the CPU, memory and process limits must stop these programs first
    memory_bytes=128 * 2**20,
    file_size_bytes=2**20,
    processes=8,
    output_bytes=4096,
)


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    return ToolContext(
        task_id=f"sandbox-test-{uuid.uuid4()}",
        org_id="acme",
        user_id="alice",
        workspace=tmp_path / "workspaces" / "task",
        limits=ToolLimits(sandbox=LIMITS, model_output_chars=100_000),
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP server on the host's loopback that the sandbox must not reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


async def _python(context: ToolContext, code: str) -> ToolOutcome:
    return await execute("python", json.dumps({"code": code}), context, registry=REGISTRY)


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if f"\nUid:\t{uid}\t" in status:
                pids.append(int(entry))
    return pids


def _owner_and_mode(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_mode & 0o777


def _accepted(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


async def test_a_program_prints_and_keeps_its_files_in_the_workspace(context: ToolContext) -> None:
    code = "import os\nopen('out.txt', 'w').write('kept')\nprint(6 * 7, os.getcwd(), os.getuid())"
    outcome = await _python(context, code)
    uid = sandbox_uid(context.task_id, context.settings.sandbox_uid_base)
    assert (outcome.error_type, outcome.output) == (None, f"42 /workspace {uid}\n")
    assert (context.workspace / "out.txt").read_text() == "kept"
    assert _owner_and_mode(context.workspace) == (uid, 0o700)  # no host user can look in
    read = await execute("read_file", '{"path": "out.txt"}', context, registry=REGISTRY)
    assert read.output == "kept"
    again = await _python(context, "print(open('out.txt').read())")
    assert again.output == "kept\n"


async def test_an_infinite_loop_is_stopped_by_the_cpu_limit(context: ToolContext) -> None:
    outcome = await _python(context, "while True:\n    pass")
    assert outcome.error_type == "SandboxCpuLimit"
    assert "1s CPU-time limit" in (outcome.error or "")


async def test_a_sleeping_program_is_killed_at_the_wall_clock_limit_with_its_children(
    context: ToolContext,
) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n"
        "print('started', flush=True)\ntime.sleep(600)"
    )
    short = context.limits.model_copy(update={"sandbox": LIMITS.model_copy(update={"wall_seconds": 2.0})})
    outcome = await _python(context.model_copy(update={"limits": short}), code)
    assert outcome.error_type == "SandboxTimeout"
    assert "2s wall-clock limit" in (outcome.error or "")
    assert outcome.output == "started\n"
    assert outcome.latency_ms < 4000
    assert _processes_of(sandbox_uid(context.task_id, context.settings.sandbox_uid_base)) == []


async def test_processes_left_behind_end_with_the_program(context: ToolContext) -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\nprint('done')"
    outcome = await _python(context, code)
    assert (outcome.error_type, outcome.output) == (None, "done\n")
    assert _processes_of(sandbox_uid(context.task_id, context.settings.sandbox_uid_base)) == []


async def test_a_memory_bomb_hits_the_memory_limit(context: ToolContext) -> None:
    outcome = await _python(context, "blocks = []\nwhile True:\n    blocks.append(bytearray(2**20))")
    assert outcome.error_type == "SandboxMemoryLimit"
    assert "134217728-byte memory limit" in (outcome.error or "")
    assert "MemoryError" in outcome.output


async def test_a_fork_bomb_hits_the_process_limit(context: ToolContext) -> None:
    outcome = await _python(context, "import os\nwhile True:\n    os.fork()")
    assert outcome.error_type == "SandboxProcessLimit"
    assert "8-process limit" in (outcome.error or "")
    assert _processes_of(sandbox_uid(context.task_id, context.settings.sandbox_uid_base)) == []


async def test_a_large_file_hits_the_file_size_limit(context: ToolContext) -> None:
    outcome = await _python(context, "open('big.bin', 'wb').write(b'x' * (4 * 2**20))")
    assert outcome.error_type == "SandboxFileSizeLimit"
    assert (context.workspace / "big.bin").stat().st_size == 2**20


async def test_connecting_to_the_hosts_loopback_is_refused(
    context: ToolContext, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    outcome = await _python(
        context, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
    )
    assert outcome.error_type == "SandboxNetworkDenied"
    assert "socket." in (outcome.error or "")
    caught = await _python(
        context,
        "import urllib.request\n"
        f"try:\n    urllib.request.urlopen('http://127.0.0.1:{port}/')\n"
        "except OSError as e:\n    print('refused', e)",
    )
    assert caught.error_type == "SandboxNetworkDenied" and caught.output.startswith("refused")
    assert not _accepted(listener)


async def test_the_network_namespace_holds_when_the_audit_hook_is_bypassed(
    context: ToolContext, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    code = (
        "import ctypes, socket, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "s = socket.socket()\n"
        f"address = struct.pack('=H', socket.AF_INET) + struct.pack('!H', {port})\n"
        "address += socket.inet_aton('127.0.0.1')\n"
        "result = libc.connect(s.fileno(), address + bytes(8), 16)\n"
        "print(result, ctypes.get_errno())"
    )
    outcome = await _python(context, code)
    assert (outcome.error_type, outcome.output) == (None, "-1 111\n")  # ECONNREFUSED: its own, empty loopback
    assert not _accepted(listener)


@pytest.mark.parametrize(
    "code",
    [
        "open('/etc/agentlog-escape', 'w').write('x')",
        "open('/tmp/agentlog-escape-{marker}', 'w').write('x')",
        "open('../agentlog-escape-{marker}', 'w').write('x')",
        "import os\nos.mkdir('/workspace/../agentlog-escape-{marker}')",
        "import os\nos.symlink('/etc/passwd', 'link')\nopen('link', 'a').write('x')",
    ],
)
async def test_writing_outside_the_workspace_is_refused(context: ToolContext, code: str) -> None:
    marker = uuid.uuid4().hex
    outcome = await _python(context, code.format(marker=marker))
    assert outcome.error_type == "SandboxWorkspaceEscape"
    assert _escaped(context, marker) == []


def _escaped(context: ToolContext, marker: str) -> list[Path]:
    """Files an escape attempt would have left outside the workspace."""
    candidates = [
        Path(f"/tmp/agentlog-escape-{marker}"),
        context.workspace.parent / f"agentlog-escape-{marker}",
        Path("/etc/agentlog-escape"),
    ]
    return [path for path in candidates if path.exists()]


async def test_the_file_system_holds_when_the_audit_hook_is_bypassed(context: ToolContext) -> None:
    marker = uuid.uuid4().hex
    targets = [
        f"/tmp/agentlog-escape-{marker}",
        f"../agentlog-escape-{marker}",
        f"/usr/agentlog-escape-{marker}",
    ]
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"for path in {targets!r}:\n"
        "    fd = libc.open(path.encode(), os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "    print(fd, os.strerror(ctypes.get_errno()))"
    )
    outcome = await _python(context, code)
    assert outcome.error_type is None
    assert outcome.output.splitlines() == [
        "-1 No such file or directory",  # no /tmp in the sandbox at all
        "-1 Read-only file system",
        "-1 Read-only file system",
    ]
    assert _escaped(context, marker) == []


async def test_the_hosts_files_are_not_visible(context: ToolContext) -> None:
    code = "import os\nprint(sorted(os.listdir('/')), os.path.exists('/work'), os.path.exists('/etc/passwd'))"
    outcome = await _python(context, code)
    assert outcome.error_type is None
    listing, work, passwd = outcome.output.rsplit(" ", 2)
    assert "'work'" not in listing and "'tmp'" not in listing and "'workspace'" in listing
    assert (work, passwd.strip()) == ("False", "False")


async def test_huge_output_is_truncated(context: ToolContext) -> None:
    outcome = await _python(
        context, "import sys\nsys.stdout.write('x' * 10_000_000)\nprint('end', file=sys.stderr)"
    )
    assert outcome.error_type is None and outcome.truncated
    assert outcome.output.startswith("x" * LIMITS.output_bytes + "\n[stdout truncated]")
    assert outcome.output.endswith("[stderr]\nend\n")


async def test_an_exception_is_a_program_error_with_its_traceback(context: ToolContext) -> None:
    outcome = await _python(context, "print('before')\n1 / 0")
    assert outcome.error_type == "SandboxProgramError"
    assert "ZeroDivisionError: division by zero" in (outcome.error or "")
    assert outcome.output.startswith("before\n[stderr]\nTraceback")


async def test_without_bubblewrap_nothing_runs(
    context: ToolContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    outcome = await _python(context, "open('ran.txt', 'w').write('x')")
    assert outcome.error_type == "SandboxUnavailable"
    assert "bubblewrap (bwrap) is not installed" in (outcome.error or "")
    assert not (context.workspace / "ran.txt").exists()
