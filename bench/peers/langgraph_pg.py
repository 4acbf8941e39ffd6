"""LangGraph with its Postgres checkpointer (``langgraph-checkpoint-postgres``) on the shared Postgres.

A StateGraph of two nodes looping, ``model`` (the shared OpenAI client, called directly in the node
rather than through langchain-openai, so the LLM client cost is the same as every contender's)
and ``tools`` (the platform's calculator), compiled with an ``AsyncPostgresSaver``. Every task is
its own thread; every super-step is checkpointed. The run's tables live in a schema of their own
(``search_path``), created in the setup phase and dropped in the cleanup phase.

``--savers``: one ``AsyncPostgresSaver`` serialises every database call of the process behind an
asyncio lock, pool or not; ``per-client`` gives each closed-loop client its own saver (and graph)
over one shared pool, which is how to get concurrent checkpoint writes out of one process.
"""

from __future__ import annotations

import argparse
import operator
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypedDict

import openai
import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bench.measure import RunOne
from bench.peers import common


class State(TypedDict):
    messages: Annotated[list[dict[str, Any]], operator.add]


def build_graph(llm: openai.AsyncOpenAI) -> StateGraph:
    """model -> tools -> model ... until the model answers without a tool call."""

    async def model(state: State) -> dict[str, Any]:
        return {"messages": [await common.call_model(llm, state["messages"])]}

    async def tools(state: State) -> dict[str, Any]:
        # async def, not def: a sync node would be sent to a thread for a microsecond of arithmetic.
        return {"messages": [common.run_tool_call(call) for call in state["messages"][-1]["tool_calls"]]}

    def route(state: State) -> str:
        return "tools" if state["messages"][-1].get("tool_calls") else END

    graph = StateGraph(State)
    graph.add_node("model", model)
    graph.add_node("tools", tools)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route, ["tools", END])
    graph.add_edge("tools", "model")
    return graph


def _pool(args: argparse.Namespace, size: int) -> AsyncConnectionPool:
    schema = common.sql_name(args.prefix)
    return AsyncConnectionPool(
        args.dsn,
        min_size=size,
        max_size=size,
        open=False,
        # What AsyncPostgresSaver requires of its connections, plus this run's schema.
        kwargs={"autocommit": True, "row_factory": dict_row, "options": f"-c search_path={schema}"},
    )


async def setup(args: argparse.Namespace) -> None:
    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {common.sql_name(args.prefix)}")
    async with _pool(args, 1) as pool:
        await AsyncPostgresSaver(pool).setup()  # type: ignore[arg-type]


async def cleanup(args: argparse.Namespace) -> None:
    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {common.sql_name(args.prefix)} CASCADE")


@asynccontextmanager
async def peer(args: argparse.Namespace, llm: openai.AsyncOpenAI) -> AsyncIterator[RunOne]:
    clients = 1 if args.mode == "unloaded" else args.concurrency
    graph = build_graph(llm)
    async with _pool(args, clients if args.savers == "per-client" else min(clients, 4)) as pool:
        if args.savers == "per-client":
            free = [graph.compile(checkpointer=AsyncPostgresSaver(pool)) for _ in range(clients)]  # type: ignore[arg-type]
        else:
            free = [graph.compile(checkpointer=AsyncPostgresSaver(pool))] * clients  # type: ignore[arg-type]

        async def run_one(number: int) -> None:
            app = free.pop()  # each closed-loop client holds one saver for the length of a task
            try:
                config: Any = {
                    "configurable": {"thread_id": f"{args.process_index}-{number}"},
                    "recursion_limit": 4 * args.k + 10,
                }
                first = {"messages": common.first_messages(args.k, number)}
                final = await app.ainvoke(first, config, durability=args.durability)
            finally:
                free.append(app)
            common.check_task(final["messages"], args.k)

        yield run_one


def main() -> None:
    arg_parser = common.parser(__doc__ or "")
    arg_parser.add_argument(
        "--durability",
        choices=("sync", "async"),
        default="async",
        help="LangGraph's checkpoint mode: 'async' (its default) writes a step's checkpoint while "
        "the next step runs; 'sync' waits for it",
    )
    arg_parser.add_argument("--savers", choices=("shared", "per-client"), default="per-client")
    common.main(peer, description=__doc__ or "", setup=setup, cleanup=cleanup, arg_parser=arg_parser)


if __name__ == "__main__":
    main()
