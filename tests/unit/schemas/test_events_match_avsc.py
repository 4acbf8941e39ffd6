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

from schemas.events import PAYLOAD_TYPES, Envelope, RecordDeadLettered
from schemas.serde import AVRO_DIR, parsed_schema, record_fullnames

_PRIMITIVE = {
    str: "string",
    int: ("int", "long"),
    float: ("double", "float"),
    bool: "boolean",
    bytes: "bytes",
}


def _avro_matches(annotation: Any, avro: Any) -> bool:
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
            return isinstance(annotation, type) and issubclass(annotation, BaseModel)
        return _avro_matches(annotation, avro["type"])
    expected = _PRIMITIVE.get(annotation)
    return avro == expected or (isinstance(expected, tuple) and avro in expected)


def _check(model: type[BaseModel], fields: list[dict[str, Any]]) -> None:
    avro_fields = {f["name"]: f for f in fields}
    assert set(model.model_fields) == set(avro_fields), model.__name__
    for name, info in model.model_fields.items():
        avro = avro_fields[name]
        assert _avro_matches(info.annotation, avro["type"]), (
            f"{model.__name__}.{name}: {info.annotation} vs {avro}"
        )
        assert avro.get("doc"), f"{model.__name__}.{name} has no doc in the .avsc"
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


def test_every_avsc_file_is_a_known_record() -> None:
    on_disk = {p.stem for p in AVRO_DIR.glob("*.avsc")} - {"agentlog.events.Envelope"}
    assert on_disk == set(record_fullnames())
