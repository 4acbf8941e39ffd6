"""What every peer shares: its command line, its LLM client, the task's checks and the JSON it prints.

Every peer is ``python -m bench.peers.<name> [options]`` and prints exactly one JSON line on stdout.
Sharing the client construction, the model call and the tool call here is what makes the peers
comparable: the only thing that differs between them is how (and whether) they persist the steps.

Phases let :mod:`bench.peer_runner` run several processes against one backend: ``setup`` once
(create tables / topics, no race between processes), then N x ``run``, then ``cleanup`` once.
``all`` (the default) does the three in one process, for one-process runs and runs by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import openai

from bench import workload
from bench.measure import LoadResult, RunOne, closed_loop, percentile, sequential

MODEL = "bench-canned"

# A peer: given its options and the shared LLM client, an async context manager that sets the
# peer up (connections, pools, consumers) and yields the function that runs task number N.
Peer = Callable[[argparse.Namespace, openai.AsyncOpenAI], AbstractAsyncContextManager[RunOne]]
Hook = Callable[[argparse.Namespace], Awaitable[None]]


def parser(description: str) -> argparse.ArgumentParser:
    """The options every peer takes (a peer may add its own before parsing)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--k", type=int, default=5, help="model+tool steps per task")
    p.add_argument("--mode", choices=("throughput", "unloaded"), default="throughput")
    p.add_argument("--phase", choices=("all", "setup", "run", "cleanup"), default="all")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop clients in this process")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before the measured window")
    p.add_argument("--measure", type=float, default=5.0, help="seconds of the measured window")
    p.add_argument("--count", type=int, default=20, help="tasks measured in unloaded mode")
    p.add_argument(
        "--start-at",
        default="now",
        help="'now', a wall-clock epoch (seconds) at which the load starts, or 'ready': print "
        '{"ready": true} on stdout once set up and read the epoch from a line on stdin',
    )
    p.add_argument("--llm-url", default="http://127.0.0.1:18090/v1")
    p.add_argument("--dsn", default="postgresql://agentlog:agentlog@127.0.0.1:5432/agentlog")
    p.add_argument("--kafka", default="127.0.0.1:9092")
    p.add_argument("--prefix", default=f"bench-peer-{os.getpid()}", help="unique name for tables/topics")
    p.add_argument("--process-index", type=int, default=0)
    p.add_argument("--processes", type=int, default=1)
    return p


def make_llm(args: argparse.Namespace) -> openai.AsyncOpenAI:
    """The one LLM client every peer uses: built exactly like the platform's gateway's
    (processors/llm/gateway.py): the SDK over its aiohttp transport."""
    return openai.AsyncOpenAI(
        base_url=args.llm_url,
        api_key="bench",
        max_retries=2,
        http_client=openai.DefaultAioHttpClient(timeout=60.0),
    )


def sql_name(prefix: str) -> str:
    """``prefix`` as a Postgres identifier that needs no quoting (schemas, app names)."""
    return "".join(c if c.isalnum() else "_" for c in prefix.lower())


def first_messages(k: int, number: int) -> list[dict[str, Any]]:
    """The conversation a bench task starts from."""
    return [
        {"role": "system", "content": workload.SYSTEM_PROMPT},
        {"role": "user", "content": workload.task_query(k, number)},
    ]


_TOOLS_JSON = json.dumps([workload.CALCULATOR_SPEC])


async def call_model(llm: openai.AsyncOpenAI, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One model call; the assistant message as a plain JSON-able dict (every peer persists this).

    The same request path as the platform's gateway: the JSON body posted through the SDK's
    client (auth, retries, errors are the SDK's) and the response body parsed once, so every
    contender pays the same LLM-client CPU and the comparison measures the frameworks.
    """
    body = f'{{"model":"{MODEL}","messages":{json.dumps(messages)},"tools":{_TOOLS_JSON}}}'
    text = await llm.post(
        "/chat/completions",
        cast_to=str,
        content=body.encode(),
        options={"headers": {"Content-Type": "application/json"}},
    )
    message = json.loads(text)["choices"][0]["message"]
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": call["function"]["arguments"]},
            }
            for call in message["tool_calls"]
            if call.get("type", "function") == "function"
        ]
    return out


def run_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """One tool call (the platform's calculator) as the tool message that answers it."""
    if call["function"]["name"] != workload.TOOL_NAME:
        raise RuntimeError(f"unexpected tool {call['function']['name']!r}")
    return {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": workload.run_tool(call["function"]["arguments"]),
    }


def check_task(messages: list[dict[str, Any]], k: int) -> None:
    """Fail loudly unless the task made K+1 model calls and K tool calls and ended as expected."""
    assistants = sum(1 for m in messages if m.get("role") == "assistant")
    tools = sum(1 for m in messages if m.get("role") == "tool")
    final = messages[-1].get("content") if messages else None
    if assistants != workload.model_calls(k) or tools != k or final != f"done after {k} steps":
        raise RuntimeError(f"bad task: {assistants} model calls, {tools} tool calls, final {final!r} (K={k})")


async def _wait_start(args: argparse.Namespace) -> None:
    """Hold the load until the shared start, so every process measures the same window."""
    if args.start_at == "now":
        return
    if args.start_at == "ready":
        print(json.dumps({"ready": True}), flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start = float(line)
    else:
        start = float(args.start_at)
    delay = start - time.time()
    if delay < -0.05:
        raise RuntimeError(f"set-up finished {-delay:.2f}s after --start-at; give the peer more time")
    await asyncio.sleep(max(0.0, delay))


async def _load(args: argparse.Namespace, run_one: RunOne) -> tuple[LoadResult, int]:
    """The load, and how many tasks finished inside the measured window (what CPU is divided by)."""
    await _wait_start(args)
    if args.mode == "unloaded":
        result = await sequential(run_one, count=args.count)
        return result, result.completed
    result = await closed_loop(
        run_one, concurrency=args.concurrency, warmup_s=args.warmup, measure_s=args.measure
    )
    return result, result.completed


async def _main(
    args: argparse.Namespace, peer: Peer, setup: Hook | None, cleanup: Hook | None
) -> dict[str, Any]:
    if args.phase in ("all", "setup") and setup is not None:
        await setup(args)
    report: dict[str, Any] = {"phase": args.phase}
    try:
        if args.phase in ("all", "run"):
            llm = make_llm(args)
            async with peer(args, llm) as run_one:
                result, finished = await _load(args, run_one)
            await llm.close()
            report |= {
                "completed": result.completed,
                "finished_in_window": finished,
                "seconds": result.seconds,
                "errors": result.errors,
                "tasks_per_s": result.tasks_per_s,
                "p50_ms": percentile(result.latencies_ms, 50),
                "p99_ms": percentile(result.latencies_ms, 99),
                "latencies_ms": [round(x, 3) for x in result.latencies_ms],
            }
    finally:
        if args.phase in ("all", "cleanup") and cleanup is not None:
            await cleanup(args)
    return report


def main(
    peer: Peer,
    *,
    description: str,
    setup: Hook | None = None,
    cleanup: Hook | None = None,
    argv: list[str] | None = None,
    arg_parser: argparse.ArgumentParser | None = None,
) -> None:
    """Parse the command line, run the phase, print one JSON line; any error exits non-zero."""
    args = (arg_parser or parser(description)).parse_args(argv)
    try:
        import uvloop  # the fastest loop the peers' venv has; every peer gets the same one
    except ImportError:  # pragma: no cover - the peers' venv pins it
        report = asyncio.run(_main(args, peer, setup, cleanup))
    else:
        report = uvloop.run(_main(args, peer, setup, cleanup))
    print(json.dumps(report), flush=True)
