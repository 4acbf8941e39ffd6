"""Reads the policy files (the shell of the policy engine): the packaged default, then per-org overrides.

Overrides live in one directory, one file per org: ``<policy_dir>/<org_id>.cedar``. Its rules are
added to the default's for that org only; other files in the directory are ignored.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from processors.policy.engine import PolicyEngine
from processors.policy.policy_file import PolicyFile, PolicyFileError, parse_policy_file

DEFAULT_POLICY = "default.cedar"
POLICY_SUFFIX = ".cedar"


class PolicyDirectoryError(ValueError):
    """The configured policy directory does not exist or is not a directory."""


def default_policy() -> PolicyFile:
    """The default policy shipped in this package."""
    text = resources.files("processors.policy").joinpath(DEFAULT_POLICY).read_text(encoding="utf-8")
    return parse_policy_file(text, f"processors/policy/{DEFAULT_POLICY}")


def read_policy_file(path: Path) -> PolicyFile:
    """One policy file from disk; raises :class:`PolicyFileError` naming ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(str(path), f"cannot be read: {exc}") from None
    return parse_policy_file(text, str(path))


def org_overrides(policy_dir: Path) -> dict[str, PolicyFile]:
    """``{org_id: its policy file}`` for every ``<org_id>.cedar`` in ``policy_dir``."""
    if not policy_dir.is_dir():
        raise PolicyDirectoryError(
            f"policy directory {str(policy_dir)!r} does not exist or is not a directory"
        )
    return {
        path.name.removesuffix(POLICY_SUFFIX): read_policy_file(path)
        for path in sorted(policy_dir.glob(f"*{POLICY_SUFFIX}"))
        if path.is_file()
    }


def load_engine(policy_dir: Path | None = None) -> PolicyEngine:
    """The engine for the default policy plus the org overrides in ``policy_dir`` (none if ``None``).

    Fails loudly (:class:`PolicyFileError`, :class:`PolicyDirectoryError`) on any bad file: a
    process must not start with a policy other than the one its operator wrote.
    """
    overrides = org_overrides(policy_dir) if policy_dir is not None else {}
    return PolicyEngine(default_policy(), overrides)
