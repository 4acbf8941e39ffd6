"""The providers file: parsed into typed providers; every error names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.llm.providers import (
    DEFAULT_PROVIDERS_FILE,
    ProvidersFileError,
    load_providers,
    parse_providers,
)
from schemas.events import ModelTier

VALID = """
providers:
  - name: primary
    base_url: http://127.0.0.1:1/v1
    api_key_env: PRIMARY_KEY
    priority: 1
    timeout_seconds: 5
    models: {SMALL: s-1, LARGE: l-1}
    prices:
      s-1: {prompt_per_1k: 0.001, completion_per_1k: 0.002}
      l-1: {prompt_per_1k: 0.01, completion_per_1k: 0.03}
  - name: backup
    base_url: http://127.0.0.1:2/v1
    models: {SMALL: b-1}
    prices: {b-1: {prompt_per_1k: 0, completion_per_1k: 0}}
"""


def test_a_valid_file_gives_typed_providers() -> None:
    providers = parse_providers(VALID, "providers.yaml")
    primary = providers.by_name("primary")
    assert primary.models == {ModelTier.SMALL: "s-1", ModelTier.LARGE: "l-1"}
    assert primary.prices["l-1"].completion_per_1k == 0.03
    assert (primary.priority, primary.timeout_seconds) == (1, 5)
    assert providers.by_name("backup").api_key() == "no-key"


def test_a_model_without_a_price_is_refused_naming_file_and_field() -> None:
    text = VALID.replace("      l-1: {prompt_per_1k: 0.01, completion_per_1k: 0.03}\n", "")
    with pytest.raises(ProvidersFileError, match=r"providers\.yaml: providers\.0.*'l-1'"):
        parse_providers(text, "providers.yaml")


def test_an_unknown_tier_names_the_field() -> None:
    with pytest.raises(ProvidersFileError, match=r"p\.yaml: providers\.1\.models\.HUGE"):
        parse_providers(VALID.replace("{SMALL: b-1}", "{HUGE: b-1}"), "p.yaml")


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ProvidersFileError, match="duplicate provider name"):
        parse_providers(VALID.replace("name: backup", "name: primary"), "p.yaml")


def test_invalid_yaml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ProvidersFileError, match=r"bad\.yaml: not valid YAML"):
        parse_providers("providers: [", "bad.yaml")
    with pytest.raises(ProvidersFileError, match=r"missing\.yaml: cannot be read"):
        load_providers(tmp_path / "missing.yaml")


def test_a_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIMARY_KEY", raising=False)
    primary = parse_providers(VALID, "p.yaml").by_name("primary")
    with pytest.raises(ProvidersFileError, match="'PRIMARY_KEY'"):
        primary.api_key()
    monkeypatch.setenv("PRIMARY_KEY", "sk-test")
    assert primary.api_key() == "sk-test"


def test_the_shipped_default_serves_every_tier_with_the_offline_planner() -> None:
    offline = load_providers(DEFAULT_PROVIDERS_FILE).by_name("offline")
    assert set(offline.models) == set(ModelTier)
