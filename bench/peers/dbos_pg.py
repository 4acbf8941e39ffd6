"""DBOS Transact: the bench task as an async workflow whose every model call and tool call is a step.

DBOS checkpoints the workflow's start, each step's output and the workflow's result in its system
database, here the shared Postgres (database ``agentlog``) in a schema of this run's own
(``dbos_system_schema``), so no database has to be created. The setup phase migrates that schema
once; the run processes only verify it, so two processes never race on DDL.

Each process gets its own ``executor_id``: with the default one (``local``) a second process would
take the first one's pending workflows for its own and recover (re-run) them.

Configuration (DBOS's fastest sensible on this machine): workflows called directly in the driver's
event loop (no queue, so no polling), a system-database pool as large as the concurrency and
without SQLAlchemy's pre-ping (a ``SELECT 1`` per checkout that a loopback Postgres doesn't need).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import psycopg
from dbos import DBOS, DBOSConfig, SetWorkflowID

from bench.measure import RunOne
from bench.peers import common

APP_NAME = "agentlog-bench-dbos"
_llm: openai.AsyncOpenAI | None = None  # the shared client; steps are module-level functions


@DBOS.step()
async def model_step(messages: list[dict[str, Any]]) -> dict[str, Any]:
    assert _llm is not None
    return await common.call_model(_llm, messages)


@DBOS.step()
async def tool_step(call: dict[str, Any]) -> dict[str, Any]:
    return common.run_tool_call(call)


@DBOS.workflow()
async def bench_task(k: int, number: int) -> list[dict[str, Any]]:
    messages = common.first_messages(k, number)
    while True:
        assistant = await model_step(messages)
        messages.append(assistant)
        calls = assistant.get("tool_calls")
        if not calls:
            return messages
        for call in calls:
            messages.append(await tool_step(call))


def _schema(args: argparse.Namespace) -> str:
    return common.sql_name(args.prefix) + "_dbos"


def _config(args: argparse.Namespace, *, migrate: bool) -> DBOSConfig:
    pool = (1 if args.mode == "unloaded" else args.concurrency) + 4
    return {
        "name": APP_NAME,
        "system_database_url": args.dsn,
        "dbos_system_schema": _schema(args),
        "executor_id": f"{args.prefix}-{args.process_index}",
        "application_version": "bench",
        "sys_db_pool_size": pool,
        "db_engine_kwargs": {
            "pool_pre_ping": False,
            "pool_size": pool,
            "max_overflow": 0,
            "pool_timeout": 30,
        },
        "run_migrations": migrate,
        "log_level": "WARNING",
        **({"max_executor_threads": args.threads} if args.threads else {}),
    }


async def setup(args: argparse.Namespace) -> None:
    DBOS(config=_config(args, migrate=True))
    DBOS.launch()
    DBOS.destroy()


async def cleanup(args: argparse.Namespace) -> None:
    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {_schema(args)} CASCADE")


@asynccontextmanager
async def peer(args: argparse.Namespace, llm: openai.AsyncOpenAI) -> AsyncIterator[RunOne]:
    global _llm
    _llm = llm
    DBOS(config=_config(args, migrate=False))
    DBOS.launch()

    async def run_one(number: int) -> None:
        with SetWorkflowID(f"{args.process_index}-{number}"):
            messages = await bench_task(args.k, number)
        common.check_task(messages, args.k)

    try:
        yield run_one
    finally:
        DBOS.destroy()


def main() -> None:
    arg_parser = common.parser(__doc__ or "")
    arg_parser.add_argument("--threads", type=int, default=0, help="DBOS executor threads (0: its default)")
    common.main(peer, description=__doc__ or "", setup=setup, cleanup=cleanup, arg_parser=arg_parser)


if __name__ == "__main__":
    main()
