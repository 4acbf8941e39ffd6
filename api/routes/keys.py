"""``/v1/keys``: an org's admins create, list and revoke the org's API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Role
from api.deps import AdminDep, ResourcesDep
from api.keys import ApiKey, CreatedKey

router = APIRouter(prefix="/v1/keys", tags=["keys"])

_USER = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"


class KeyCreate(BaseModel):
    """A new key of the caller's org."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "ci-bot", "role": "operator", "name": "CI pipeline"}]},
    )

    user_id: str = Field(pattern=_USER, description="Who the key acts as.")
    role: Role = Role.VIEWER
    name: str = Field(default="", max_length=200, description="What the key is for.")
    rate_per_second: float | None = Field(default=None, gt=0, le=10_000, description="Own rate limit.")
    rate_burst: int | None = Field(default=None, ge=1, le=100_000)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CreatedKey,
    operation_id="create_api_key",
    summary="Create an API key in the caller's org (its secret is shown only in this answer)",
    responses={403: {"description": "The caller is not an admin"}},
)
async def create_key(body: KeyCreate, resources: ResourcesDep, caller: AdminDep) -> CreatedKey:
    return await resources.keys.create(
        org_id=caller.org_id,
        user_id=body.user_id,
        role=body.role,
        name=body.name,
        rate_per_second=body.rate_per_second,
        rate_burst=body.rate_burst,
        created_by=caller.user_id,
    )


@router.get(
    "",
    response_model=list[ApiKey],
    operation_id="list_api_keys",
    summary="The API keys of the caller's org, newest first",
    responses={403: {"description": "The caller is not an admin"}},
)
async def list_keys(
    resources: ResourcesDep,
    caller: AdminDep,
    include_revoked: Annotated[bool, Query(description="List revoked keys too.")] = False,
) -> list[ApiKey]:
    return await resources.keys.list(caller.org_id, include_revoked=include_revoked)


@router.delete(
    "/{key_id}",
    response_model=ApiKey,
    operation_id="revoke_api_key",
    summary="Revoke an API key of the caller's org (effective for the next request)",
    responses={403: {"description": "The caller is not an admin"}, 404: {"description": "No such key"}},
)
async def revoke_key(key_id: str, resources: ResourcesDep, caller: AdminDep) -> ApiKey:
    revoked = await resources.keys.revoke(key_id, org_id=caller.org_id)
    if revoked is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no API key {key_id} in org {caller.org_id}")
    return revoked
