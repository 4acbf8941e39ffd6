"""Compatibility levels: what each allows, checked with the avro package's checker."""

from __future__ import annotations

import json

from schemas.registry.compatibility import Level, incompatibilities


def _record(*fields: dict[str, object]) -> str:
    return json.dumps({"type": "record", "name": "E", "namespace": "t", "fields": list(fields)})


V1 = _record({"name": "a", "type": "string"})
OPTIONAL_B = {"name": "b", "type": ["null", "int"], "default": None}
V2_OPTIONAL = _record({"name": "a", "type": "string"}, OPTIONAL_B)
V2_REQUIRED = _record({"name": "a", "type": "string"}, {"name": "b", "type": "int"})
V2_DROPPED = _record(OPTIONAL_B)


def test_adding_a_field_with_a_default_is_backward_and_forward_compatible() -> None:
    for level in Level:
        assert incompatibilities(level, V2_OPTIONAL, [V1]) == []


def test_adding_a_required_field_breaks_backward() -> None:
    problems = incompatibilities(Level.BACKWARD_TRANSITIVE, V2_REQUIRED, [V1])
    assert len(problems) == 1
    assert "version 1" in problems[0] and "reader_field_missing_default_value" in problems[0]
    assert incompatibilities(Level.FORWARD, V2_REQUIRED, [V1]) == []
    assert incompatibilities(Level.NONE, V2_REQUIRED, [V1]) == []


def test_removing_a_field_without_default_breaks_forward() -> None:
    assert incompatibilities(Level.BACKWARD, V2_DROPPED, [V1]) == []
    assert incompatibilities(Level.FORWARD, V2_DROPPED, [V1]) != []
    assert incompatibilities(Level.FULL, V2_DROPPED, [V1]) != []


def test_transitive_checks_every_version_not_only_the_latest() -> None:
    # v3 requires b (no default): it reads v2, which writes b, but not v1, which has no b at all.
    v3 = _record({"name": "a", "type": "string"}, {"name": "b", "type": ["null", "int"]})
    history = [V1, V2_OPTIONAL]
    assert incompatibilities(Level.BACKWARD, v3, history) == []
    transitive = incompatibilities(Level.BACKWARD_TRANSITIVE, v3, history)
    assert len(transitive) == 1 and "version 1" in transitive[0]
