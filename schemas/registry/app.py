"""The registry's REST API: the Confluent Schema Registry paths that standard clients use.

Implemented: ``/subjects``, ``/subjects/{s}/versions[/{v}]``, ``POST /subjects/{s}/versions``,
``POST /subjects/{s}`` (lookup), ``/schemas/ids/{id}`` and ``/schemas/ids/{id}/versions``,
``/config`` and ``/config/{s}`` (GET, PUT) and ``POST /compatibility/subjects/{s}/versions/{v}``.
Registration enforces the subject's compatibility level (default BACKWARD_TRANSITIVE): an
incompatible schema gets 409 with the reasons and is not stored.
Errors use Confluent's body: ``{"error_code": 40401, "message": "..."}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from schemas.registry.compatibility import DEFAULT_LEVEL, Level
from schemas.registry.store import (
    IncompatibleSchemaError,
    RegisteredSchema,
    SchemaParseError,
    SchemaStore,
)
from streams.settings import Settings, get_settings
from streams.topics import SCHEMAS

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(Exception):
    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


class SchemaRequest(BaseModel):
    """Body of Confluent's register and lookup calls."""

    # Confluent's field names; ``schema`` would shadow a BaseModel attribute, hence the aliases.
    schema_text: str = Field(alias="schema")
    schema_type: str = Field(default="AVRO", alias="schemaType")


def _version_body(registered: RegisteredSchema) -> dict[str, Any]:
    return {
        "subject": registered.subject,
        "version": registered.version,
        "id": registered.id,
        "schema": registered.schema,
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    store = SchemaStore()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.start(settings.kafka_bootstrap, SCHEMAS.name(settings))
        yield
        await store.stop()

    app = FastAPI(title="agentlog schema registry", lifespan=lifespan)

    @app.exception_handler(RegistryError)
    async def _registry_error(_: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse(
            {"error_code": exc.error_code, "message": exc.message},
            status_code=exc.status,
            media_type=MEDIA_TYPE,
        )

    def _check_avro(body: SchemaRequest) -> None:
        if body.schema_type.upper() != "AVRO":
            raise RegistryError(422, 42201, f"schema type {body.schema_type!r} is not supported; only AVRO")

    def _versions(subject: str) -> list[RegisteredSchema]:
        versions = store.versions(subject)
        if not versions:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return versions

    @app.get("/")
    async def root() -> dict[str, Any]:
        return {}

    @app.get("/subjects")
    async def subjects() -> list[str]:
        return store.subjects()

    @app.get("/subjects/{subject}/versions")
    async def subject_versions(subject: str) -> list[int]:
        return [r.version for r in _versions(subject)]

    @app.get("/subjects/{subject}/versions/{version}")
    async def subject_version(subject: str, version: str) -> dict[str, Any]:
        versions = _versions(subject)
        if version == "latest":
            return _version_body(versions[-1])
        if not version.isdigit():
            raise RegistryError(
                422, 42202, f"Invalid version {version!r}: must be a positive integer or 'latest'"
            )
        for registered in versions:
            if registered.version == int(version):
                return _version_body(registered)
        raise RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")

    @app.post("/subjects/{subject}/versions")
    async def register(subject: str, body: SchemaRequest) -> dict[str, int]:
        _check_avro(body)
        try:
            registered = await store.register(subject, body.schema_text)
        except SchemaParseError as exc:
            raise RegistryError(422, 42201, str(exc)) from exc
        except IncompatibleSchemaError as exc:
            raise RegistryError(409, 409, str(exc)) from exc
        return {"id": registered.id}

    @app.post("/subjects/{subject}")
    async def lookup(subject: str, body: SchemaRequest) -> dict[str, Any]:
        _check_avro(body)
        _versions(subject)
        try:
            registered = store.lookup(subject, body.schema_text)
        except SchemaParseError as exc:
            raise RegistryError(422, 42201, str(exc)) from exc
        if registered is None:
            raise RegistryError(404, 40403, "Schema not found.")
        return _version_body(registered)

    @app.get("/schemas/ids/{schema_id}")
    async def schema_by_id(schema_id: int) -> dict[str, str]:
        schema = store.schema_by_id(schema_id)
        if schema is None:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found.")
        return {"schema": schema}

    @app.get("/schemas/ids/{schema_id}/versions")
    async def schema_versions(schema_id: int) -> list[dict[str, Any]]:
        if store.schema_by_id(schema_id) is None:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found.")
        return [{"subject": r.subject, "version": r.version} for r in store.subjects_of(schema_id)]

    @app.get("/config")
    async def global_config() -> dict[str, str]:
        return {"compatibilityLevel": (store.level() or Level(DEFAULT_LEVEL)).value}

    @app.put("/config")
    async def set_global_config(body: ConfigRequest) -> dict[str, str]:
        await store.set_level(None, _level(body.compatibility))
        return {"compatibility": body.compatibility.upper()}

    @app.get("/config/{subject}")
    async def subject_config(subject: str, defaultToGlobal: bool = False) -> dict[str, str]:
        level = store.level(subject)
        if level is None and defaultToGlobal:
            level = store.effective_level(subject)
        if level is None:
            raise RegistryError(
                404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )
        return {"compatibilityLevel": level.value}

    @app.put("/config/{subject}")
    async def set_subject_config(subject: str, body: ConfigRequest) -> dict[str, str]:
        await store.set_level(subject, _level(body.compatibility))
        return {"compatibility": body.compatibility.upper()}

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    async def check_compatibility(
        subject: str, version: str, body: SchemaRequest, verbose: bool = False
    ) -> dict[str, Any]:
        _check_avro(body)
        versions = _versions(subject)
        if version != "latest" and not any(str(r.version) == version for r in versions):
            raise RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")
        try:
            problems = store.check(subject, body.schema_text)
        except SchemaParseError as exc:
            raise RegistryError(422, 42201, str(exc)) from exc
        answer: dict[str, Any] = {"is_compatible": not problems}
        if verbose:
            answer["messages"] = problems
        return answer

    return app


class ConfigRequest(BaseModel):
    compatibility: str


def _level(name: str) -> Level:
    try:
        return Level(name.upper())
    except ValueError:
        raise RegistryError(
            422, 42203, f"Invalid compatibility level {name!r}; one of {', '.join(Level)}"
        ) from None
