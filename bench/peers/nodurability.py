"""The floor: the bench task as a bare asyncio loop that persists nothing.

Model call, tool call, append, repeat: what any agent costs before durability. Every durable
contender is this loop plus its persistence, so the gap to this figure is the price of durability.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai

from bench.measure import RunOne
from bench.peers import common


async def run_task(llm: openai.AsyncOpenAI, k: int, number: int) -> list[dict]:
    """One task, in memory only; returns its conversation."""
    messages = common.first_messages(k, number)
    while True:
        assistant = await common.call_model(llm, messages)
        messages.append(assistant)
        calls = assistant.get("tool_calls")
        if not calls:
            return messages
        messages.extend(common.run_tool_call(call) for call in calls)


@asynccontextmanager
async def peer(args: argparse.Namespace, llm: openai.AsyncOpenAI) -> AsyncIterator[RunOne]:
    async def run_one(number: int) -> None:
        common.check_task(await run_task(llm, args.k, number), args.k)

    yield run_one


if __name__ == "__main__":
    common.main(peer, description=__doc__ or "")
