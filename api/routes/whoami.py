"""``GET /v1/whoami``: who the credential stands for, so a client (the console) can show only the
caller's org and hide the actions its role may not take."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Role
from api.deps import CallerDep

router = APIRouter(prefix="/v1", tags=["auth"])


class Identity(BaseModel):
    """The authenticated caller: every other ``/v1`` answer is scoped to this org and role."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "org_id": "acme",
                    "user_id": "alice",
                    "role": "operator",
                    "credential": "api_key",
                    "key_id": "k3f2a9c01",
                    "may": {"submit": True, "decide_approvals": True, "fork": True, "manage_keys": False},
                }
            ]
        }
    )

    org_id: str
    user_id: str
    role: Role
    credential: str = Field(description="`api_key` or `jwt`.")
    key_id: str | None = Field(default=None, description="The API key's id; null for a JWT.")
    may: dict[str, bool] = Field(
        description="What the role allows: `submit` (and cancel), `decide_approvals`, `fork`, `manage_keys`."
    )


@router.get(
    "/whoami",
    response_model=Identity,
    operation_id="whoami",
    summary="The caller's org, user and role, and what that role may do",
)
async def whoami(caller: CallerDep) -> Identity:
    operator = caller.role.allows(Role.OPERATOR)
    return Identity(
        org_id=caller.org_id,
        user_id=caller.user_id,
        role=caller.role,
        credential=caller.credential,
        key_id=caller.key_id,
        may={
            "submit": operator,
            "decide_approvals": operator,
            "fork": operator,
            "manage_keys": caller.role.allows(Role.ADMIN),
        },
    )
