"""The API's one error shape: RFC 9457 problem+json."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str = Field(description="Where: a dotted path into the body, or the parameter's name.")
    message: str
    type: str


class Problem(BaseModel):
    """Every error answer (RFC 9457 problem details)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "task 3f2a not found (or not projected yet)",
                }
            ]
        },
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(default=None, description="Each invalid field (422 only).")


# Declared on the app, so every operation documents the errors any of them may answer; FastAPI then
# leaves out its own 422 schema, which is not the shape this API answers with.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body cannot be parsed (not UTF-8 JSON)"},
    401: {"description": "No valid API key or bearer token"},
    422: {"description": "Invalid parameters or body; `errors` names each field"},
    429: {"description": "Rate limit of the key exceeded; see Retry-After"},
    500: {"description": "Unexpected error (logged; no internals in the answer)"},
    503: {"description": "A dependency is unavailable, or ?after= timed out; see Retry-After"},
}
_NEEDS_CREDENTIALS = ("401", "429")


def install_openapi(app: FastAPI) -> None:
    """Documents every error answer as what it is: ``application/problem+json`` with :class:`Problem`
    (routes declare only a description per status), and 401/429 only where credentials are taken."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(problem_schema.pop("$defs", {}))
            components["Problem"] = problem_schema
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if "{" in path:
                        # Every path parameter names something that may not exist in the org.
                        operation["responses"].setdefault(
                            "404", {"description": "Nothing of that id in the caller's org"}
                        )
                    _document_errors(operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.get("responses", {})
    for code in list(responses):
        if code in _NEEDS_CREDENTIALS and "security" not in operation:
            del responses[code]
        elif code[0] in "45":
            responses[code]["content"] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _readable(error: dict[str, Any]) -> dict[str, Any]:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return {"field": location or "body", "message": error.get("msg", ""), "type": error.get("type", "")}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_readable(e) for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", summary, errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback here; the client gets the one error shape and no internals.
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return problem(500, "Internal Server Error", f"unexpected {type(exc).__name__}; see the API log")


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
