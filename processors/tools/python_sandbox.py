"""The ``python`` tool: runs model-written code in a sandbox, and says which limit stopped it.

Isolation (see docs/tools.md, also for what it does not protect against):

- **bubblewrap** (``bwrap``, Debian package ``bubblewrap``) starts the program in new network, PID,
  IPC, UTS and mount namespaces. The network namespace has only its own loopback, so no address
  outside it, the host's 127.0.0.1 included, can be reached. The mount namespace shows a read-only
  ``/usr``, the interpreter's prefix and a minimal ``/dev`` and ``/proc``; the task's workspace is
  the one writable directory, at ``/workspace``, which is also the working directory. Nothing else
  of the host's file system (other tasks' workspaces, the platform's data) is visible.
- :mod:`processors.tools.sandbox_launcher` sets the rlimits (CPU, address space, file size,
  processes, open files), becomes an unprivileged uid of the task's own (so RLIMIT_NPROC counts
  only this task's processes, and the program holds no capability) and installs an audit hook that
  refuses and reports network use and writes outside the workspace. The hook names what the
  program tried; the namespaces and the uid are what stop it, with or without the hook.
- The wall-clock limit kills bubblewrap, whose namespace init takes every process of the program
  with it; when the program's first process ends, any it left behind end too.

Fails closed: if bubblewrap is missing or cannot create the namespaces, the call fails with
``SandboxUnavailable`` and nothing runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.tools.contract import (
    SandboxLimits,
    Tool,
    ToolArgumentsError,
    ToolContext,
    ToolError,
    ToolOutput,
)
from processors.tools.files import ensure_workspace

log = logging.getLogger(__name__)

SANDBOX_WORKSPACE = "/workspace"
LAUNCHER_SOURCE = (Path(__file__).parent / "sandbox_launcher.py").read_text()
UID_SPAN = 2**30
# After the wall-clock kill, how long the output pipes may take to close.
DRAIN_SECONDS = 5.0
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")


class SandboxError(ToolError):
    """The sandboxed program did not finish normally."""


class SandboxUnavailable(SandboxError):
    """The sandbox could not be set up, so the program was not run."""


class SandboxTimeout(SandboxError):
    """The program ran past its wall-clock limit and was killed."""


class SandboxCpuLimit(SandboxError):
    """The program used up its CPU time."""


class SandboxMemoryLimit(SandboxError):
    """The program ran out of its address-space limit."""


class SandboxFileSizeLimit(SandboxError):
    """The program wrote a file past the size limit."""


class SandboxProcessLimit(SandboxError):
    """The program tried to start more processes than allowed."""


class SandboxNetworkDenied(SandboxError):
    """The program tried to use the network."""


class SandboxWorkspaceEscape(SandboxError):
    """The program tried to write outside its workspace."""


class SandboxKilled(SandboxError):
    """The program was ended by a signal (a crash)."""


class SandboxProgramError(SandboxError):
    """The program exited with a non-zero status (an uncaught exception, say)."""


@dataclass
class SandboxRun:
    """What came back from one sandboxed run, before it is judged."""

    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    verdict: dict[str, Any] | None = None
    reports: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False
    returncode: int | None = None
    seconds: float = 0.0

    def text(self) -> str:
        """stdout, then stderr under a marker, as the model reads them."""
        out = self.stdout.decode("utf-8", errors="replace")
        err = self.stderr.decode("utf-8", errors="replace")
        if self.stdout_truncated:
            out += "\n[stdout truncated]"
        if err:
            out += ("\n" if out and not out.endswith("\n") else "") + "[stderr]\n" + err
            if self.stderr_truncated:
                out += "\n[stderr truncated]"
        return out


def sandbox_uid(task_id: str, base: int) -> int:
    """The unprivileged uid the programs of ``task_id`` run as (stable, distinct per task)."""
    digest = hashlib.sha256(task_id.encode()).digest()
    return base + int.from_bytes(digest[:8], "big") % UID_SPAN


def judge(run: SandboxRun, limits: SandboxLimits) -> SandboxError | None:
    """The failure of ``run``, most decisive first; None when the program exited 0 within limits."""
    output = run.text()
    truncated = run.stdout_truncated or run.stderr_truncated
    reports = run.reports
    verdict = run.verdict

    def failure(kind: type[SandboxError], message: str) -> SandboxError:
        return kind(message, output=output, truncated=truncated)

    if run.timed_out:
        return failure(SandboxTimeout, f"killed after the {limits.wall_seconds:g}s wall-clock limit")
    if "setup_failed" in reports:
        return failure(SandboxUnavailable, f"sandbox set-up failed: {reports['setup_failed']}")
    if verdict is None:
        stderr = run.stderr.decode("utf-8", errors="replace").strip()
        return failure(
            SandboxUnavailable, f"sandbox exited {run.returncode} without a verdict: {stderr[:500]}"
        )
    sig = verdict.get("signal")
    cpu = float(verdict.get("cpu_seconds") or 0.0)
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_seconds):
        return failure(
            SandboxCpuLimit, f"stopped at the {limits.cpu_seconds}s CPU-time limit ({cpu:.2f}s used)"
        )
    if sig == signal.SIGXFSZ:
        return failure(SandboxFileSizeLimit, f"wrote past the {limits.file_size_bytes}-byte file-size limit")
    if "memory" in reports:
        return failure(SandboxMemoryLimit, f"ran out of its {limits.memory_bytes}-byte memory limit")
    if "process_limit" in reports:
        return failure(
            SandboxProcessLimit, f"hit the {limits.processes}-process limit: {reports['process_limit']}"
        )
    if "network" in reports:
        return failure(SandboxNetworkDenied, f"network access refused: {reports['network']}")
    if "workspace_escape" in reports:
        return failure(
            SandboxWorkspaceEscape, f"write outside the workspace refused: {reports['workspace_escape']}"
        )
    if sig is not None:
        return failure(SandboxKilled, f"killed by {signal.Signals(sig).name}")
    if verdict.get("exit_code"):
        last = run.stderr.decode("utf-8", errors="replace").strip().splitlines()
        detail = last[-1] if last else "no error output"
        return failure(SandboxProgramError, f"exited with status {verdict['exit_code']}: {detail[:300]}")
    return None


def bubblewrap_command(bwrap: str, workspace: Path, config: dict[str, Any], *, info_fd: int) -> list[str]:
    """The bwrap command line that runs the launcher over ``workspace`` with ``config``.

    bwrap writes the host pid of the namespace's init to ``info_fd``.
    """
    interpreter = os.path.realpath(sys.executable)
    prefix = Path(os.path.realpath(sys.base_prefix))
    command = [
        bwrap,
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--info-fd",
        str(info_fd),
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in _TOP_LEVEL_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            command += ["--ro-bind", str(path), str(path)]
    for etc_file in _ETC_FILES:
        command += ["--ro-bind-try", etc_file, etc_file]
    if not prefix.is_relative_to("/usr"):
        # bwrap makes missing parents owner-only; the program's uid must be able to pass them.
        for parent in reversed(prefix.parents[:-1]):
            command += ["--perms", "0755", "--dir", str(parent)]
        command += ["--ro-bind", str(prefix), str(prefix)]
    command += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--bind",
        str(workspace),
        SANDBOX_WORKSPACE,
        "--chdir",
        SANDBOX_WORKSPACE,
        "--remount-ro",
        "/",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CAP_SETUID",
        "--cap-add",
        "CAP_SETGID",
        # To enter the owner-only workspace, owned by the program's uid, before becoming that uid.
        "--cap-add",
        "CAP_DAC_READ_SEARCH",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "HOME",
        SANDBOX_WORKSPACE,
        "--setenv",
        "TMPDIR",
        SANDBOX_WORKSPACE,
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--",
        interpreter,
        "-I",
        "-S",
        "-c",
        LAUNCHER_SOURCE,
        json.dumps(config),
    ]
    return command


def _give_workspace_to(workspace: Path, uid: int) -> Path:
    """Make the workspace the program's uid's, so it can write there (links are not followed).

    Returns its absolute path, which is what bwrap binds.
    """
    workspace = workspace.resolve()
    os.chown(workspace, uid, uid)
    for directory, directories, names in os.walk(workspace):
        for name in directories + names:
            os.chown(os.path.join(directory, name), uid, uid, follow_symlinks=False)
    return workspace


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of ``stream``, reading (and dropping) the rest so the writer never blocks."""
    kept = bytearray()
    more = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            more = True
    return bytes(kept), more


def _read_pipe(fd: int, limit: int = 65536) -> bytes:
    """What is in a pipe whose writers have gone (or are going): never blocks."""
    os.set_blocking(fd, False)
    data = bytearray()
    with contextlib.suppress(BlockingIOError):
        while len(data) < limit and (chunk := os.read(fd, 65536)):
            data += chunk
    return bytes(data)


def _parse_reports(data: bytes) -> dict[str, str]:
    reports: dict[str, str] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            report = json.loads(line)
            reports.setdefault(str(report["kind"]), str(report.get("detail", "")))
        except (ValueError, KeyError, TypeError):
            continue  # a line the program forged badly: ignored, the kernel's limits still hold
    return reports


async def run_python(code: str, *, workspace: Path, uid: int, limits: SandboxLimits) -> SandboxRun:
    """Run ``code`` in the sandbox over ``workspace`` as ``uid``; never raises for the program's faults.

    Returns once every process of the program is gone, so none outlives the call.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SandboxRun(stderr=b"bubblewrap (bwrap) is not installed", returncode=None)
    workspace = await asyncio.to_thread(_give_workspace_to, workspace, uid)
    events_read, events_write = os.pipe()
    verdict_read, verdict_write = os.pipe()
    info_read, info_write = os.pipe()
    config = {
        "uid": uid,
        "workspace": SANDBOX_WORKSPACE,
        "events_fd": events_write,
        "verdict_fd": verdict_write,
        "limits": limits.model_dump(),
    }
    run = SandboxRun()
    started = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            *bubblewrap_command(bwrap, workspace, config, info_fd=info_write),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(events_write, verdict_write, info_write),
            start_new_session=True,
        )
    except BaseException:
        for fd in (events_read, verdict_read, info_read):
            os.close(fd)
        raise
    finally:
        for fd in (events_write, verdict_write, info_write):
            os.close(fd)
    assert process.stdin and process.stdout and process.stderr
    readers = asyncio.gather(
        _read_capped(process.stdout, limits.output_bytes),
        _read_capped(process.stderr, limits.output_bytes),
    )
    try:
        try:
            async with asyncio.timeout(limits.wall_seconds):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    process.stdin.write(code.encode())
                    await process.stdin.drain()
                    process.stdin.close()
                await process.wait()
                await asyncio.shield(readers)
        except TimeoutError:
            run.timed_out = True
            _kill(process)
            await process.wait()
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                (run.stdout, run.stdout_truncated), (run.stderr, run.stderr_truncated) = await readers
                await _namespace_gone(_read_pipe(info_read))
        except TimeoutError:
            log.error("sandbox of uid %d did not wind down within %gs of its end", uid, DRAIN_SECONDS)
        run.returncode = process.returncode
        verdict = _read_pipe(verdict_read)
        run.verdict = json.loads(verdict) if verdict else None
        run.reports = _parse_reports(_read_pipe(events_read))
    finally:
        if process.returncode is None:
            _kill(process)
            await process.wait()
        if not readers.done():
            readers.cancel()
        for fd in (events_read, verdict_read, info_read):
            os.close(fd)
        run.seconds = time.perf_counter() - started
    return run


async def _namespace_gone(info: bytes) -> None:
    """Wait until the sandbox's PID-namespace init has exited, which the kernel allows only once
    every other process in the namespace is gone. bwrap itself returns as soon as the program's
    first process ends, while the rest may still be dying."""
    try:
        init = int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return  # bwrap failed before starting the namespace: there is nothing to wait for
    try:
        pidfd = os.pidfd_open(init)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def _kill(process: asyncio.subprocess.Process) -> None:
    # bwrap leads its own process group; its namespace init and so the whole program go with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _python(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
    code: str = arguments["code"]
    limits = context.limits.sandbox
    if len(code) > limits.code_chars:
        raise ToolArgumentsError(
            f"code of {len(code)} characters exceeds the {limits.code_chars}-character limit"
        )
    workspace = ensure_workspace(context.workspace)
    uid = sandbox_uid(context.task_id, context.settings.sandbox_uid_base)
    run = await run_python(code, workspace=workspace, uid=uid, limits=limits)
    failure = judge(run, limits)
    if failure is not None:
        raise failure
    return ToolOutput(text=run.text(), truncated=run.stdout_truncated or run.stderr_truncated)


TOOL = Tool(
    name="python",
    description=(
        "Run a Python 3.11 program (standard library only) in an isolated sandbox with no network. "
        f"Its working directory is the task's workspace ({SANDBOX_WORKSPACE}), the only place it can "
        "write; files there persist between calls of the same task. Returns what it prints; CPU time, "
        "memory, file size, process count, run time and output are limited."
    ),
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "minLength": 1, "description": "The program's source"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    invoke=_python,
    sensitive=True,
)
