"""The pydantic event models and the .avsc files (the source of truth) describe the same records."""

from __future__ import annotations

import json
import types
import typing
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel

from schemas.events import (
    PAYLOAD_TYPES,
    AuditSealed,
    BudgetScope,
    CacheKind,
    Envelope,
    ExecutionMode,
    ModelTier,
    RecordDeadLettered,
    StepKind,
    Subtask,
)
from schemas.requests import REQUEST_TYPES
from schemas.serde import AVRO_DIR, parsed_schema, record_fullnames

_PRIMITIVE = {
    str: "string",
    int: ("int", "long"),
    float: ("double", "float"),
    bool: "boolean",
    bytes: "bytes",
}


def _named_types(schema: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type (record, enum) defined anywhere in a parsed schema, by full name."""
    found = {} if found is None else found
    if isinstance(schema, dict):
        if schema.get("type") in ("record", "enum") and "name" in schema:
            name = schema["name"]
            found[name if "." in name else f"{schema.get('namespace', '')}.{name}"] = schema
        for value in schema.values():
            _named_types(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _named_types(value, found)
    return found


_NAMED: dict[str, Any] = {}


def _int_bounds(annotation: Any, metadata: list[Any]) -> tuple[Any, Any] | None:
    """(ge, le) of an int field, looking inside ``Optional[Annotated[int, ...]]``; None if not an int."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        [inner] = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(inner) is typing.Annotated:
            base, *extra = typing.get_args(inner)
            constraints = [m for info in extra for m in getattr(info, "metadata", [info])]
            return _int_bounds(base, constraints)
        return _int_bounds(inner, metadata)
    if annotation is not int:
        return None
    low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in metadata if hasattr(m, "le")), None)
    return low, high


def _avro_matches(annotation: Any, avro: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(avro, str) and avro in _NAMED:
        avro = _NAMED[avro]  # a reference to a named type defined earlier in the schema
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (
            isinstance(avro, list)
            and avro[0] == "null"
            and len(args) == 1
            and _avro_matches(args[0], avro[1])
        )
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if logical == "uuid":
            return annotation is UUID
        if logical == "timestamp-millis":
            return annotation is datetime
        if avro["type"] == "map":
            return origin is dict and _avro_matches(typing.get_args(annotation)[1], avro["values"])
        if avro["type"] == "array":
            return origin is list and _avro_matches(typing.get_args(annotation)[0], avro["items"])
        if avro["type"] == "enum":
            return (
                isinstance(annotation, type)
                and issubclass(annotation, Enum)
                and [m.value for m in annotation] == avro["symbols"]
            )
        if avro["type"] == "record":
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            _check(annotation, avro["fields"])
            return True
        return _avro_matches(annotation, avro["type"])
    expected = _PRIMITIVE.get(annotation)
    return avro == expected or (isinstance(expected, tuple) and avro in expected)


def _check(model: type[BaseModel], fields: list[dict[str, Any]]) -> None:
    _NAMED.update(_named_types(fields))
    avro_fields = {f["name"]: f for f in fields}
    assert set(model.model_fields) == set(avro_fields), model.__name__
    for name, info in model.model_fields.items():
        avro = avro_fields[name]
        assert _avro_matches(info.annotation, avro["type"]), (
            f"{model.__name__}.{name}: {info.annotation} vs {avro}"
        )
        assert avro.get("doc"), f"{model.__name__}.{name} has no doc in the .avsc"
        bounds = _int_bounds(info.annotation, info.metadata)
        if bounds is not None:
            avro_type = avro["type"]
            if isinstance(avro_type, list):
                avro_type = next(t for t in avro_type if t != "null")
            bits = 31 if avro_type == "int" else 63
            low, high = bounds
            assert high == 2**bits - 1, f"{model.__name__}.{name}: no {avro_type} upper bound"
            assert low in (-(2**bits), 0), f"{model.__name__}.{name}: no {avro_type} lower bound"
        has_default = not info.is_required()
        assert has_default == ("default" in avro), f"{model.__name__}.{name}: default differs"


@pytest.mark.parametrize("fullname", sorted(PAYLOAD_TYPES))
def test_payload_model_matches_avsc(fullname: str) -> None:
    schema = parsed_schema(fullname)
    assert schema.get("doc")
    envelope, *payload_fields = schema["fields"]
    assert envelope["name"] == "envelope"
    _check(PAYLOAD_TYPES[fullname], payload_fields)


def test_envelope_and_dead_letter_match_avsc() -> None:
    _check(Envelope, json.loads((AVRO_DIR / "agentlog.events.Envelope.avsc").read_text())["fields"])
    _check(RecordDeadLettered, parsed_schema(RecordDeadLettered.fullname())["fields"])
    _check(AuditSealed, parsed_schema(AuditSealed.fullname())["fields"])


NAMED_TYPES = {
    # Types nested in events (each has its own .avsc, referenced by name), not events themselves.
    "agentlog.events.Envelope": Envelope,
    "agentlog.events.Subtask": Subtask,
    "agentlog.events.ExecutionMode": ExecutionMode,
    "agentlog.events.ModelTier": ModelTier,
    "agentlog.events.StepKind": StepKind,
    "agentlog.events.BudgetScope": BudgetScope,
    "agentlog.events.CacheKind": CacheKind,
}


def test_every_avsc_file_is_a_known_record_or_named_type() -> None:
    on_disk = {p.stem for p in AVRO_DIR.glob("*.avsc")}
    assert on_disk == set(record_fullnames()) | set(NAMED_TYPES) | {"agentlog.requests.RequestHeader"}
    assert set(REQUEST_TYPES) <= set(record_fullnames())


@pytest.mark.parametrize("fullname", sorted(REQUEST_TYPES))
def test_request_model_matches_avsc(fullname: str) -> None:
    schema = parsed_schema(fullname)
    assert schema.get("doc")
    _check(REQUEST_TYPES[fullname], schema["fields"])


@pytest.mark.parametrize("fullname", sorted(NAMED_TYPES))
def test_named_types_match_avsc(fullname: str) -> None:
    schema = json.loads((AVRO_DIR / f"{fullname}.avsc").read_text())
    assert schema.get("doc"), fullname
    model = NAMED_TYPES[fullname]
    if schema["type"] == "enum":
        assert isinstance(model, type) and issubclass(model, Enum)
        assert [m.value for m in model] == schema["symbols"]
        assert schema["default"] in schema["symbols"]
    else:
        assert issubclass(model, BaseModel)
        _check(model, schema["fields"])


def test_every_record_and_field_has_a_doc() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("record", "enum"):
                assert node.get("doc"), f"{where}: {node['name']} has no doc"
            for field in node.get("fields", []) if node.get("type") == "record" else []:
                assert field.get("doc"), f"{where}: {node['name']}.{field['name']} has no doc"
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path in AVRO_DIR.glob("*.avsc"):
        walk(json.loads(path.read_text()), path.name)
