"""The task's workspace and the file tools confined to it (``read_file``, ``write_file``).

A path from the model is relative to the workspace. It is refused if it is absolute, contains a
NUL byte or climbs out with ``..``; it is then opened one component at a time beneath the
workspace's directory descriptor with ``O_NOFOLLOW``, so a symbolic link anywhere on the way (one
a sandboxed program planted, say, even after the path was checked) fails the call instead of
leading outside.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import posixpath
import re
import stat
from pathlib import Path
from typing import Any

from processors.tools.contract import Tool, ToolContext, ToolError, ToolOutput

_TASK_DIRECTORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class WorkspacePathError(ToolError):
    """The path leaves the workspace, or goes through a symbolic link."""


class FileToolError(ToolError):
    """The file cannot be read or written (missing, a directory, too large, ...)."""


def workspace_for(root: Path, task_id: str) -> Path:
    """The workspace directory of ``task_id`` under ``root`` (a hash when the id is not a plain name)."""
    if _TASK_DIRECTORY.fullmatch(task_id) and task_id not in (".", ".."):
        return root / task_id
    return root / ("task-" + hashlib.sha256(task_id.encode()).hexdigest()[:32])


def ensure_workspace(workspace: Path) -> Path:
    """Create the workspace directory (owner-only) if needed; refuses a symbolic link."""
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    if workspace.is_symlink() or not workspace.is_dir():
        raise FileToolError(f"workspace {str(workspace)!r} is not a directory")
    return workspace


def workspace_parts(path: str) -> list[str]:
    """The components of a workspace-relative ``path``; raises :class:`WorkspacePathError` if it escapes."""
    if not path or "\x00" in path:
        raise WorkspacePathError(f"invalid path {path!r}")
    if path.startswith("/"):
        raise WorkspacePathError(f"absolute path {path!r}: paths are relative to the workspace")
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        raise WorkspacePathError(f"path {path!r} leaves the workspace")
    if normal == ".":
        raise WorkspacePathError(f"path {path!r} names the workspace itself, not a file")
    return normal.split("/")


def _open_beneath(workspace: Path, parts: list[str], flags: int, *, make_parents: bool = False) -> int:
    """Open ``parts`` under ``workspace`` without following any symbolic link; returns the fd."""
    directory = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory
                )
            except FileNotFoundError:
                if not make_parents:
                    raise
                os.mkdir(part, 0o755, dir_fd=directory)
                child = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory
                )
            os.close(directory)
            directory = child
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=directory)
    except OSError as exc:
        # ELOOP: the last component is a link; ENOTDIR: a directory on the way is one.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise WorkspacePathError(
                f"path {'/'.join(parts)!r} goes through a symbolic link or a non-directory"
            ) from exc
        raise
    finally:
        os.close(directory)


def read_workspace_file(workspace: Path, path: str, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the file at ``path``, and whether there was more."""
    parts = workspace_parts(path)
    try:
        fd = _open_beneath(workspace, parts, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise FileToolError(f"no file {path!r} in the workspace") from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise FileToolError(f"{path!r} is not a regular file")
        data = handle.read(limit + 1)
    return data[:limit], len(data) > limit


def workspace_size(workspace: Path) -> int:
    """Bytes in the workspace's regular files (links are not followed)."""
    total = 0
    for directory, _, names in os.walk(workspace):
        for name in names:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def write_workspace_file(workspace: Path, path: str, content: bytes, *, max_bytes: int, quota: int) -> None:
    """Store ``content`` at ``path`` (parents created), within the file and workspace limits."""
    parts = workspace_parts(path)
    if len(content) > max_bytes:
        raise FileToolError(f"content of {len(content)} bytes exceeds the {max_bytes}-byte write limit")
    used = workspace_size(workspace)
    if used + len(content) > quota:
        raise FileToolError(
            f"writing {len(content)} bytes would take the workspace past its {quota}-byte quota ({used} used)"
        )
    try:
        fd = _open_beneath(workspace, parts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, make_parents=True)
    except IsADirectoryError as exc:
        raise FileToolError(f"{path!r} is a directory") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


_PATH_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 1024,
    "description": "Path relative to the task's workspace, e.g. data/report.csv",
}


async def _read_file(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
    workspace = ensure_workspace(context.workspace)
    try:
        data, truncated = await asyncio.to_thread(
            read_workspace_file, workspace, arguments["path"], context.limits.files.read_bytes
        )
    except OSError as exc:
        raise FileToolError(f"cannot read {arguments['path']!r}: {exc.strerror}") from exc
    return ToolOutput(text=data.decode("utf-8", errors="replace"), truncated=truncated)


async def _write_file(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
    workspace = ensure_workspace(context.workspace)
    content = arguments["content"].encode()
    limits = context.limits.files
    try:
        await asyncio.to_thread(
            write_workspace_file,
            workspace,
            arguments["path"],
            content,
            max_bytes=limits.write_bytes,
            quota=limits.workspace_bytes,
        )
    except OSError as exc:
        raise FileToolError(f"cannot write {arguments['path']!r}: {exc.strerror}") from exc
    return ToolOutput(text=f"wrote {len(content)} bytes to {arguments['path']}")


READ_FILE = Tool(
    name="read_file",
    description="Read a text file from the task's workspace (UTF-8; long files are truncated).",
    parameters={
        "type": "object",
        "properties": {"path": _PATH_SCHEMA},
        "required": ["path"],
        "additionalProperties": False,
    },
    invoke=_read_file,
)
WRITE_FILE = Tool(
    name="write_file",
    description="Write a text file in the task's workspace, replacing it if it exists.",
    parameters={
        "type": "object",
        "properties": {"path": _PATH_SCHEMA, "content": {"type": "string"}},
        "required": ["path", "content"],
        "additionalProperties": False,
    },
    invoke=_write_file,
    sensitive=True,
)
