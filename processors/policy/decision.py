"""The policy engine's boundary: a :class:`PolicyRequest` in, a :class:`PolicyDecision` out."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class PolicyEffect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


# Rule ids the engine itself decides with; a policy file may not use them as an @id.
DEFAULT_DENY = "default-deny"
UNREPRESENTABLE_ARGUMENTS = "unrepresentable-arguments"
INVALID_REQUEST = "invalid-request"
RESERVED_RULE_IDS = frozenset({DEFAULT_DENY, UNREPRESENTABLE_ARGUMENTS, INVALID_REQUEST})


class PolicyRequest(BaseModel):
    """One tool call to judge: who asks (org, user, role), for which tool, with which arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    org_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    role: str | None = Field(
        default=None,
        min_length=1,
        description="RBAC role (admin, operator, viewer); None for a caller without one.",
    )
    tool: str = Field(min_length=1, description="Registered tool name.")
    arguments: dict[str, JsonValue] = Field(default_factory=dict, description="The call's JSON arguments.")
    task_id: str = ""


class PolicyDecision(BaseModel):
    """The verdict and the rule that reached it (recorded in ToolCallAuthorized/Denied, ApprovalRequested)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    effect: PolicyEffect
    rule: str = Field(description="@id of the deciding rule, or one of the engine's own rule ids.")
    reason: str = Field(description="Why, for the event, the model and the reviewer.")
    matched_rules: tuple[str, ...] = Field(
        default=(), description="The rules whose conditions held, in file order."
    )
