"""The file tools stay in the task's workspace: each way out is refused, and sizes are capped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from processors.tools.contract import FileLimits, ToolContext, ToolLimits
from processors.tools.execute import ToolOutcome, execute
from processors.tools.files import WorkspacePathError, ensure_workspace, workspace_for, workspace_parts
from processors.tools.registry import build_registry

REGISTRY = build_registry(plugins=[])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspaces" / "task-1"


@pytest.fixture
def context(workspace: Path) -> ToolContext:
    limits = ToolLimits(files=FileLimits(read_bytes=10, write_bytes=20, workspace_bytes=30))
    return ToolContext(task_id="task-1", org_id="acme", user_id="alice", workspace=workspace, limits=limits)


async def _write(context: ToolContext, path: str, content: str) -> ToolOutcome:
    return await execute(
        "write_file", f'{{"path": "{path}", "content": "{content}"}}', context, registry=REGISTRY
    )


async def _read(context: ToolContext, path: str) -> ToolOutcome:
    return await execute("read_file", f'{{"path": "{path}"}}', context, registry=REGISTRY)


async def test_write_then_read_inside_the_workspace(context: ToolContext, workspace: Path) -> None:
    written = await _write(context, "notes/day1.txt", "hello")
    assert written.error_type is None and written.output == "wrote 5 bytes to notes/day1.txt"
    assert (workspace / "notes" / "day1.txt").read_text() == "hello"
    assert (await _read(context, "notes/./day1.txt")).output == "hello"
    assert (await _read(context, "notes/../notes/day1.txt")).output == "hello"


def test_a_workspace_is_created_owner_only(workspace: Path) -> None:
    assert ensure_workspace(workspace) == workspace
    assert oct(workspace.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../outside.txt", "leaves the workspace"),
        ("a/../../outside.txt", "leaves the workspace"),
        ("..", "leaves the workspace"),
        ("/etc/passwd", "absolute path"),
        ("/tmp/x", "absolute path"),
        (".", "names the workspace itself"),
    ],
)
async def test_paths_out_of_the_workspace_are_refused(
    context: ToolContext, workspace: Path, path: str, message: str
) -> None:
    for outcome in (await _write(context, path, "x"), await _read(context, path)):
        assert outcome.error_type == "WorkspacePathError"
        assert message in (outcome.error or "") and path in (outcome.error or "")
    assert not (workspace.parent / "outside.txt").exists()


def test_nul_bytes_are_refused() -> None:
    with pytest.raises(WorkspacePathError, match="invalid path"):
        workspace_parts("a\x00b")


def _plant_link(workspace: Path, name: str, target: Path) -> None:
    """What a sandboxed program can do: leave a link in the workspace that points outside it."""
    ensure_workspace(workspace)
    (workspace / name).symlink_to(target, target_is_directory=target.is_dir())


async def test_a_symlinked_file_pointing_outside_is_not_followed(
    context: ToolContext, workspace: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    _plant_link(workspace, "link.txt", secret)
    read = await _read(context, "link.txt")
    assert read.error_type == "WorkspacePathError" and "symbolic link" in (read.error or "")
    written = await _write(context, "link.txt", "overwritten")
    assert written.error_type == "WorkspacePathError"
    assert secret.read_text() == "top secret"


async def test_a_symlinked_directory_pointing_outside_is_not_followed(
    context: ToolContext, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("outside data")
    _plant_link(workspace, "dir", outside)
    assert (await _read(context, "dir/data.txt")).error_type == "WorkspacePathError"
    assert (await _write(context, "dir/new.txt", "x")).error_type == "WorkspacePathError"
    assert sorted(os.listdir(outside)) == ["data.txt"]


async def test_sizes_are_limited(context: ToolContext, workspace: Path) -> None:
    too_big = await _write(context, "big.txt", "x" * 21)
    assert too_big.error_type == "FileToolError" and "20-byte write limit" in (too_big.error or "")
    assert (await _write(context, "a.txt", "y" * 20)).error_type is None
    over_quota = await _write(context, "b.txt", "z" * 11)
    assert over_quota.error_type == "FileToolError" and "30-byte quota (20 used)" in (over_quota.error or "")
    read = await _read(context, "a.txt")
    assert read.output == "y" * 10 and read.truncated


async def test_missing_files_and_directories_are_errors(context: ToolContext) -> None:
    assert (await _write(context, "dir/file.txt", "x")).error_type is None
    missing = await _read(context, "nope.txt")
    assert missing.error_type == "FileToolError" and "no file 'nope.txt'" in (missing.error or "")
    directory = await _read(context, "dir")
    assert (directory.error_type, directory.error) == ("FileToolError", "cannot read 'dir': Is a directory")
    assert (await _write(context, "dir", "x")).error_type == "FileToolError"


def test_workspace_directory_names_cannot_escape_their_root(tmp_path: Path) -> None:
    assert workspace_for(tmp_path, "2b1c-task") == tmp_path / "2b1c-task"
    for hostile in ("../../etc", "..", "a/b", ""):
        path = workspace_for(tmp_path, hostile)
        assert path.parent == tmp_path and path.name.startswith("task-")


async def test_a_fifo_is_not_read(context: ToolContext, workspace: Path) -> None:
    os.mkfifo(ensure_workspace(workspace) / "pipe")
    outcome = await _read(context, "pipe")
    assert (outcome.error_type, outcome.error) == ("FileToolError", "'pipe' is not a regular file")
