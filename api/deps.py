"""Shared resources of the API process and their ``Annotated`` dependency aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from redis.asyncio import Redis

from projections.postgres import TaskQueries
from streams.producer import EventProducer
from streams.settings import Settings


@dataclass
class Resources:
    settings: Settings
    producer: EventProducer
    queries: TaskQueries
    redis: Redis


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(_resources)]

# Until API keys carry the caller's org (issue 6), read endpoints are told it and check every
# resource against it.
OrgQuery = Annotated[str, Query(description="The caller's org.")]
