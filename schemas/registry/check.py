"""``agentlog schemas check``: would the working tree's schemas be accepted by the registry?

For every event type of every topic (TopicRecordNameStrategy subjects), asks the registry's
compatibility endpoint whether the local schema may follow what is registered, under the
subject's level. A subject not registered yet is new, which is always allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from schemas.registry.client import subject_for
from schemas.serde import schema_json
from streams.settings import Settings
from streams.topics import CATALOGUE


@dataclass(frozen=True)
class SubjectCheck:
    subject: str
    record: str
    status: str  # "compatible", "incompatible" or "new"
    problems: tuple[str, ...] = ()


def local_schemas(settings: Settings) -> dict[str, str]:
    """subject -> the working tree's schema text, for every event type the catalogue carries."""
    return {
        subject_for(spec.name(settings), record): schema_json(record)
        for spec in CATALOGUE
        for record in spec.event_types
    }


def check_subjects(registry_url: str, schemas: Mapping[str, str]) -> list[SubjectCheck]:
    """Check each subject's schema against the registry (raises httpx.HTTPError if unreachable)."""
    results = []
    with httpx.Client(base_url=registry_url, timeout=10) as client:
        for subject, text in sorted(schemas.items()):
            record = subject.rsplit("-", 1)[-1]
            reply = client.post(
                f"/compatibility/subjects/{subject}/versions/latest",
                params={"verbose": "true"},
                json={"schema": text, "schemaType": "AVRO"},
            )
            if reply.status_code == 404:
                results.append(SubjectCheck(subject, record, "new"))
                continue
            reply.raise_for_status()
            body = reply.json()
            status = "compatible" if body["is_compatible"] else "incompatible"
            results.append(SubjectCheck(subject, record, status, tuple(body.get("messages", []))))
    return results
