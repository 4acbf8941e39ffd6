"""The first code that runs inside the sandbox: drops privileges, sets limits, runs the program.

Not imported by agentlog: :mod:`processors.tools.python_sandbox` passes this file's text to
``python -I -S -c`` inside bubblewrap's namespaces, so it uses the standard library only. It starts
as root holding only CAP_SETUID, CAP_SETGID and CAP_DAC_READ_SEARCH, reads the program from stdin,
and forks:

- the child sets the resource limits, becomes the task's unprivileged uid (which clears its
  capabilities), installs an audit hook that refuses and reports network use and writes outside
  the workspace, and runs the program;
- this process waits for it and writes the verdict (exit status, signal, CPU time) to a pipe the
  program never holds, so the program cannot forge how it ended.

Reports from inside the program (a limit hit it did not catch, a refused network or file access)
go to a second pipe, one JSON object per line. The program could write there too; it can only
mislabel its own failure, never hide one the kernel enforced.
"""

import builtins
import errno
import json
import os
import resource
import signal
import socket
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

SETUP_FAILED_EXIT = 125
_NETWORK_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
    }
)
_ADDRESSED_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})
_PATH_EVENTS = frozenset(
    {"os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "os.utime", "os.mkfifo"}
)
_TWO_PATH_EVENTS = frozenset({"os.rename", "os.link"})
_SPAWN_EVENTS = frozenset(
    {"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "os.exec", "subprocess.Popen"}
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _Reporter:
    """Writes each kind of report once per process to the events pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sent: set[str] = set()
        self.spawned = False

    def report(self, kind: str, detail: str) -> None:
        if kind in self.sent:
            return
        self.sent.add(kind)
        try:
            os.write(self.fd, (json.dumps({"kind": kind, "detail": detail[:300]}) + "\n").encode())
        except OSError:
            pass  # the program closed or filled the pipe: the kernel's limits still hold


def _inside(path: object, workspace: str) -> bool:
    if isinstance(path, int):
        return True  # an fd the program already holds
    resolved = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
    return resolved == workspace or resolved.startswith((workspace + "/", "/dev/", "/proc/self/fd/"))


def _audit_hook(reporter: _Reporter, workspace: str) -> Callable[[str, tuple[Any, ...]], None]:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _SPAWN_EVENTS:
            reporter.spawned = True
        elif event == "open":
            path, mode, flags = args
            writing = bool(flags & _WRITE_FLAGS) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writing and not _inside(path, workspace):
                reporter.report("workspace_escape", f"open {path!r} for writing")
                raise PermissionError(errno.EACCES, "writing outside the workspace is not allowed", path)
        elif event in _PATH_EVENTS or event in _TWO_PATH_EVENTS or event == "os.symlink":
            # A symlink may point anywhere; writing through it is what the "open" check refuses.
            paths = (
                args[:2] if event in _TWO_PATH_EVENTS else args[1:2] if event == "os.symlink" else args[:1]
            )
            for path in paths:
                if path is not None and not _inside(path, workspace):
                    reporter.report("workspace_escape", f"{event} {path!r}")
                    raise PermissionError(
                        errno.EACCES, "changing files outside the workspace is not allowed", path
                    )
        elif event in _NETWORK_EVENTS:
            if event in _ADDRESSED_EVENTS and args[0].family not in (socket.AF_INET, socket.AF_INET6):
                return  # a Unix socket or socketpair stays inside the sandbox
            reporter.report("network", f"{event} {args[1:]!r}")
            raise PermissionError(errno.EACCES, "network access is disabled in the sandbox")

    return hook


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run_program(code: str, config: dict[str, Any], reporter: _Reporter) -> None:
    limits = config["limits"]
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_bytes"], limits["file_size_bytes"]))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setgroups([])
        os.setgid(config["uid"])
        os.setuid(config["uid"])
        if os.getuid() == 0 or os.geteuid() == 0:
            raise PermissionError(f"still root after setuid({config['uid']})")
    except Exception as exc:
        reporter.report("setup_failed", f"{type(exc).__name__}: {exc}")
        os._exit(SETUP_FAILED_EXIT)
    # Python ignores SIGXFSZ, turning the file-size limit into a catchable OSError; the default
    # action makes the kernel end the program, so the limit is recorded as what stopped it.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    sys.addaudithook(_audit_hook(reporter, config["workspace"]))
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    status = 0
    try:
        exec(compile(code, "<sandbox>", "exec"), main.__dict__)
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException as exc:
        if isinstance(exc, MemoryError):
            reporter.report("memory", "MemoryError")
        elif isinstance(exc, OSError) and exc.errno == errno.EAGAIN and reporter.spawned:
            reporter.report("process_limit", str(exc))
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def main() -> None:
    config = json.loads(sys.argv[1])
    code = sys.stdin.buffer.read().decode("utf-8")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    reporter = _Reporter(config["events_fd"])
    child = os.fork()
    if child == 0:
        os.close(config["verdict_fd"])
        _run_program(code, config, reporter)
    os.close(config["events_fd"])
    _, status, usage = os.wait4(child, 0)
    verdict = {
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "max_rss_kib": usage.ru_maxrss,
    }
    os.write(config["verdict_fd"], json.dumps(verdict).encode())
    os._exit(0)


if __name__ == "__main__":
    main()
