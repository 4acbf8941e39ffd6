"""``agentlog policy check``'s core: judge one request given as JSON, as the processor would.

For operators trying a policy change before rolling it out: the same loader and engine as the
processor, with the request typed in instead of coming from a model.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from processors.policy.decision import PolicyDecision, PolicyRequest
from processors.policy.loader import load_engine


class PolicyRequestError(ValueError):
    """The JSON is not a policy request; the message lists each offending field."""


def parse_request(request_json: str) -> PolicyRequest:
    """The :class:`PolicyRequest` in ``request_json``; raises :class:`PolicyRequestError`."""
    try:
        return PolicyRequest.model_validate_json(request_json)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(body)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise PolicyRequestError(f"not a policy request: {problems}") from None


def check_request(request_json: str, policy_dir: Path | None = None) -> PolicyDecision:
    """The decision on ``request_json`` under the default policy plus ``policy_dir``'s overrides."""
    return load_engine(policy_dir).decide(parse_request(request_json))
