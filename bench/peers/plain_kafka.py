"""A plain aiokafka consumer loop, no framework: the least a Kafka-logged agent can do.

The driver produces a task request (acks=all) to a requests topic. A consumer loop in the same
process consumes requests and runs each task's K steps; after every effect (model answer, tool
result) it records the effect to an events topic and waits for the ack before going on (one
idempotent acks=all producer, so concurrent tasks' records share batches). A task is done when its
completion record is acknowledged. No projections, no schema registry, no Avro: JSON records.

With N processes, process i owns partitions ``i, i+N, ...`` of the requests topic: it produces its
requests there and consumes only those, so every process completes the tasks it drives without a
consumer-group rebalance in the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench.measure import RunOne
from bench.peers import common

PARTITIONS = 6


def topics(prefix: str) -> tuple[str, str]:
    """(requests topic, events topic) of a run."""
    return f"{prefix}-requests", f"{prefix}-events"


async def setup(args: argparse.Namespace) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=args.kafka)
    await admin.start()
    try:
        for name in topics(args.prefix):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


async def cleanup(args: argparse.Namespace) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=args.kafka)
    await admin.start()
    try:
        await admin.delete_topics(list(topics(args.prefix)))
    finally:
        await admin.close()


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


class Loop:
    """The consumer loop and the effect log of one process."""

    def __init__(self, args: argparse.Namespace, llm: openai.AsyncOpenAI, producer: AIOKafkaProducer) -> None:
        self.args = args
        self.llm = llm
        self.producer = producer
        self.events = topics(args.prefix)[1]
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.running: set[asyncio.Task[None]] = set()

    async def record(self, task_id: str, event: dict[str, Any]) -> None:
        """Write one effect to the log and wait for its ack (the step is durable after this)."""
        await self.producer.send_and_wait(self.events, _encode(event), key=task_id.encode())

    async def run_task(self, request: dict[str, Any]) -> None:
        task_id, k = request["task_id"], request["k"]
        try:
            messages = common.first_messages(k, request["number"])
            while True:
                assistant = await common.call_model(self.llm, messages)
                messages.append(assistant)
                await self.record(task_id, {"task_id": task_id, "type": "model", "message": assistant})
                calls = assistant.get("tool_calls")
                if not calls:
                    break
                for call in calls:
                    result = common.run_tool_call(call)
                    messages.append(result)
                    await self.record(task_id, {"task_id": task_id, "type": "tool", "message": result})
            common.check_task(messages, k)
            await self.record(
                task_id, {"task_id": task_id, "type": "completed", "answer": messages[-1]["content"]}
            )
        except Exception as exc:
            self.waiting.pop(task_id).set_exception(exc)
        else:
            self.waiting.pop(task_id).set_result(None)

    async def consume(self, consumer: AIOKafkaConsumer) -> None:
        """Hand each request to its own asyncio task (the driver bounds how many are in flight)."""
        async for message in consumer:
            request = json.loads(message.value)
            task = asyncio.create_task(self.run_task(request))
            self.running.add(task)
            task.add_done_callback(self.running.discard)


@asynccontextmanager
async def peer(args: argparse.Namespace, llm: openai.AsyncOpenAI) -> AsyncIterator[RunOne]:
    requests_topic, _ = topics(args.prefix)
    mine = [p for p in range(PARTITIONS) if p % args.processes == args.process_index]
    producer = AIOKafkaProducer(
        bootstrap_servers=args.kafka, acks="all", enable_idempotence=True, linger_ms=args.linger_ms
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.kafka,
        group_id=f"{args.prefix}-{args.process_index}",
        enable_auto_commit=True,
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(requests_topic, p) for p in mine])
    loop = Loop(args, llm, producer)
    consuming = asyncio.create_task(loop.consume(consumer))

    async def run_one(number: int) -> None:
        task_id = f"{args.prefix}-{args.process_index}-{number}"
        done = asyncio.get_running_loop().create_future()
        loop.waiting[task_id] = done
        request = {"task_id": task_id, "k": args.k, "number": number}
        await producer.send_and_wait(
            requests_topic, _encode(request), key=task_id.encode(), partition=mine[number % len(mine)]
        )
        # A dead consumer loop must fail the run, not leave the driver waiting forever.
        await asyncio.wait({done, consuming}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            raise RuntimeError("consumer loop stopped") from consuming.exception()
        await done

    try:
        yield run_one
    finally:
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
        await consumer.stop()
        await producer.stop()


def main() -> None:
    arg_parser = common.parser(__doc__ or "")
    # 0 is this peer's fastest: a write waits for no timer, yet records that queue up while a
    # request is in flight still go out as one batch (the platform uses linger_ms=0 too).
    arg_parser.add_argument("--linger-ms", type=int, default=0, help="producer batching delay")
    common.main(peer, description=__doc__ or "", setup=setup, cleanup=cleanup, arg_parser=arg_parser)


if __name__ == "__main__":
    main()
