"""Registry-aware codec: events to Confluent-framed bytes and back."""

from __future__ import annotations

from collections.abc import Callable

from schemas.events import Event, RecordDeadLettered
from schemas.registry.client import RegistryClient, RegistryRejected, subject_for
from schemas.requests import TaskRequest
from schemas.serde import (
    RecordDecodeError,
    decode_dead_letter,
    decode_request,
    encode_dead_letter,
    encode_event,
    encode_request,
    event_reader,
    frame,
    is_request,
    schema_json,
    unframe,
)


class UnknownSchemaIdError(RecordDecodeError, LookupError):
    """The record names a schema id the registry does not know."""


class EventCodec:
    """Frames Avro bodies with registry ids (TopicRecordNameStrategy) and decodes framed records."""

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry
        # A subject's id for our schema text and the schema behind an id never change, so after the
        # first event of each kind no await reaches the registry client (three coroutine hops and
        # a cache lookup there, ~10 % of encoding or decoding an event).
        self._ids: dict[tuple[str, str], int] = {}
        self._readers: dict[int, Callable[[bytes], Event]] = {}

    async def schema_id(self, topic: str, record_fullname: str) -> int:
        key = (topic, record_fullname)
        schema_id = self._ids.get(key)
        if schema_id is None:
            schema_id = await self.registry.register(
                subject_for(topic, record_fullname), schema_json(record_fullname)
            )
            self._ids[key] = schema_id
        return schema_id

    async def encode_body(self, topic: str, record_fullname: str, body: bytes) -> bytes:
        """Frame an already-encoded body (the bytes whose digest the hash chain holds)."""
        schema_id = self._ids.get((topic, record_fullname))
        if schema_id is None:
            schema_id = await self.schema_id(topic, record_fullname)
        return frame(schema_id, body)

    async def encode(self, topic: str, event: Event) -> bytes:
        return await self.encode_body(topic, event.payload.fullname(), encode_event(event))

    async def encode_dead_letter(self, topic: str, record: RecordDeadLettered) -> bytes:
        return await self.encode_body(topic, record.fullname(), encode_dead_letter(record))

    async def _writer_schema(self, schema_id: int) -> str:
        try:
            return await self.registry.schema(schema_id)
        except RegistryRejected as exc:
            if exc.status == 404:
                raise UnknownSchemaIdError(f"schema id {schema_id} is not in the registry") from exc
            raise

    async def decode(self, data: bytes | None) -> Event:
        """Decode a framed task event; raises on bad framing, unknown ids, unknown records, bad bodies."""
        schema_id, body = unframe(data)
        read = self._readers.get(schema_id)
        if read is None:
            read = event_reader(await self._writer_schema(schema_id))
            self._readers[schema_id] = read
        return read(body)

    async def encode_request(self, topic: str, request: TaskRequest) -> bytes:
        return await self.encode_body(topic, request.fullname(), encode_request(request))

    async def decode_record(self, data: bytes | None) -> Event | TaskRequest:
        """Decode a record of the requests topic: a task event (a submission) or a request."""
        schema_id, body = unframe(data)
        writer = await self._writer_schema(schema_id)
        if is_request(writer):
            return decode_request(body, writer)
        return await self.decode(data)

    async def decode_dead_letter(self, data: bytes | None) -> RecordDeadLettered:
        schema_id, body = unframe(data)
        return decode_dead_letter(body, await self._writer_schema(schema_id))
