"""``agentlog keys create|list|revoke``: API keys for installation admins (straight to Postgres).

The REST API lets an org's admins manage their own org's keys; this command is for whoever runs the
installation, e.g. to create an org's first admin key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from psycopg_pool import AsyncConnectionPool
from rich.table import Table

from api.auth import AuthError, Role
from api.cli_common import console, err
from api.keys import ApiKey, KeyStore
from projections.migrate import migrate
from streams.settings import get_settings

keys_app = typer.Typer(help="API keys of the REST API (admins of the installation).", no_args_is_help=True)
T = TypeVar("T")


def _run(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    async def run() -> T:
        settings = get_settings()
        await migrate(settings.postgres_dsn)
        async with AsyncConnectionPool(settings.postgres_dsn, min_size=1, max_size=1, open=False) as pool:
            return await action(KeyStore(pool))

    return asyncio.run(run())


@keys_app.command("create")
def create(
    org: Annotated[str, typer.Option(help="The org the key belongs to.")],
    user: Annotated[str, typer.Option(help="The user the key acts as.")],
    role: Annotated[Role, typer.Option(help="admin, operator or viewer.")] = Role.VIEWER,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    rate_per_second: Annotated[float | None, typer.Option(help="Own rate limit (requests/s).")] = None,
    rate_burst: Annotated[int | None, typer.Option(help="Own burst size.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create a key; its secret is printed once and stored only as a hash."""
    created = _run(
        lambda store: store.create(
            org_id=org,
            user_id=user,
            role=role,
            name=name,
            rate_per_second=rate_per_second,
            rate_burst=rate_burst,
            created_by="cli",
        )
    )
    if as_json:
        typer.echo(created.model_dump_json(indent=2))
        return
    console.print(
        f"created key [bold]{created.key_id}[/] for {created.user_id}@{created.org_id} ({role.value})"
    )
    console.print("the key (shown only now; send it as `Authorization: Bearer <key>`):")
    typer.echo(created.token)


@keys_app.command("list")
def list_keys(
    org: Annotated[str | None, typer.Option(help="Only this org's keys.")] = None,
    include_revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The keys (never their secrets), newest first."""
    keys = _run(lambda store: store.list(org, include_revoked=include_revoked))
    if as_json:
        typer.echo(json.dumps([key.model_dump(mode="json") for key in keys], indent=2))
        return
    table = Table("key", "org", "user", "role", "name", "created", "revoked")
    for key in keys:
        table.add_row(
            key.key_id,
            key.org_id,
            key.user_id,
            key.role.value,
            key.name,
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after alk_).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    revoked: ApiKey | None = _run(lambda store: store.revoke(key_id, org_id=None))
    if revoked is None:
        err.print(f"[bold red]error:[/] no API key {key_id}")
        raise typer.Exit(1)
    if as_json:
        typer.echo(revoked.model_dump_json(indent=2))
    else:
        console.print(f"revoked {key_id} ({revoked.user_id}@{revoked.org_id})")


def demo_key(org: str, user: str) -> str:
    """An operator key for ``agentlog demo``, created once and kept (0600) in the state directory."""
    from api.cli import _state_dir

    path = _state_dir() / "demo-api-key"
    if path.exists():
        token = path.read_text().strip()
        if _run(lambda store: _valid(store, token)):
            return token
    created = _run(
        lambda store: store.create(
            org_id=org, user_id=user, role=Role.OPERATOR, name="agentlog demo", created_by="cli"
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(created.token)
    return created.token


async def _valid(store: KeyStore, token: str) -> bool:
    try:
        await store.caller(token)
    except AuthError:
        return False
    return True
