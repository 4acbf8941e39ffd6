"""The providers file: which OpenAI-compatible endpoints the gateway may call, for which tier, at what price.

YAML, one entry per provider::

    providers:
      - name: primary
        base_url: https://api.example.com/v1
        api_key_env: EXAMPLE_API_KEY     # the key is read from this variable, never from the file
        priority: 0                      # lower is tried first
        timeout_seconds: 30
        models: {SMALL: small-model, MEDIUM: medium-model, LARGE: large-model}
        prices:                          # USD per 1k tokens, one entry per model named above
          small-model: {prompt_per_1k: 0.00015, completion_per_1k: 0.0006}

A malformed file raises :class:`ProvidersFileError` naming the file and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.events import ModelTier

DEFAULT_PROVIDERS_FILE = Path(__file__).with_name("providers.default.yaml")


class ProvidersFileError(ValueError):
    """The providers file cannot be read or does not describe valid providers."""


class ModelPrice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    prompt_per_1k: float = Field(ge=0)
    completion_per_1k: float = Field(ge=0)


class ProviderConfig(BaseModel):
    """One OpenAI-compatible endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    api_key_env: str | None = None
    priority: int = 0
    timeout_seconds: float = Field(default=60.0, gt=0)
    models: dict[ModelTier, str] = Field(min_length=1)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _every_model_has_a_price(self) -> Self:
        # An unpriced model would be accounted at zero cost, which silently defeats budgets.
        missing = sorted(set(self.models.values()) - set(self.prices))
        if missing:
            raise ValueError(f"provider {self.name!r}: no price for model(s) {missing} (add them to prices)")
        return self

    def api_key(self) -> str:
        """The key from ``api_key_env``; a placeholder for keyless (local) endpoints."""
        if self.api_key_env is None:
            return "no-key"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ProvidersFileError(
                f"provider {self.name!r}: environment variable {self.api_key_env!r} (api_key_env) is not set"
            )
        return key


class Providers(BaseModel):
    """Every configured provider; names are unique."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    providers: tuple[ProviderConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [p.name for p in self.providers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate provider name(s) {duplicates}")
        return self

    def by_name(self, name: str) -> ProviderConfig:
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise KeyError(f"no provider named {name!r}; configured: {[p.name for p in self.providers]}")


def parse_providers(text: str, source: str) -> Providers:
    """The providers described by YAML ``text``; ``source`` names the file in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProvidersFileError(f"{source}: not valid YAML: {exc}") from exc
    try:
        return Providers.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<top>'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ProvidersFileError(f"{source}: {fields}") from exc


def load_providers(path: Path) -> Providers:
    """The providers in the YAML file at ``path``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProvidersFileError(f"{path}: cannot be read: {exc}") from exc
    return parse_providers(text, str(path))
