"""Async client of the schema registry (Confluent REST paths), with id and schema caches."""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryUnavailable(RuntimeError):
    """The registry did not answer."""


class RegistryRejected(RuntimeError):
    """The registry answered with an error (bad schema, unknown id, incompatible change)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"schema registry answered {status}: {body}")
        self.status, self.body = status, body


def subject_for(topic: str, record_fullname: str) -> str:
    """Subject under TopicRecordNameStrategy: several event types share one topic, each versioned."""
    return f"{topic}-{record_fullname}"


class RegistryClient:
    """Registers schemas and resolves ids; every answer is cached (ids and schemas are immutable)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout, headers={"Accept": MEDIA_TYPE})
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"schema registry at {self._http.base_url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise RegistryRejected(response.status_code, body)
        return response.json()

    async def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Wait for the registry to answer (it starts beside the API under one supervisor)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RegistryUnavailable),
            stop=stop_after_delay(timeout),
            wait=wait_exponential(multiplier=0.1, max=2),
            reraise=True,
        ):
            with attempt:
                await self._call("GET", "/subjects")

    async def register(self, subject: str, schema_text: str) -> int:
        key = (subject, schema_text)
        if key not in self._ids:
            body = await self._call("POST", f"/subjects/{subject}/versions", {"schema": schema_text})
            self._ids[key] = int(body["id"])
            self._schemas[self._ids[key]] = schema_text
        return self._ids[key]

    async def schema(self, schema_id: int) -> str:
        if schema_id not in self._schemas:
            body = await self._call("GET", f"/schemas/ids/{schema_id}")
            self._schemas[schema_id] = str(body["schema"])
        return self._schemas[schema_id]
