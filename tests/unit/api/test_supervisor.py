"""Which components ``agentlog serve`` runs for a configuration."""

from __future__ import annotations

from api.supervisor import components
from streams.settings import Settings


def _names(settings: Settings) -> list[str]:
    return [child.component for child in components(settings)]


def test_offline_platform_runs_its_registry_and_the_offline_llm() -> None:
    settings = Settings.model_construct(registry_url=None, llm_base_url=None, llm_api_key=None)
    assert _names(settings) == [
        "registry",
        "offline-llm",
        "api",
        "projector-postgres",
        "projector-elasticsearch",
        "auditor",
        "processor#1",
    ]


def test_an_external_registry_replaces_the_platforms_own() -> None:
    settings = Settings.model_construct(
        registry_url="http://registry.internal:8081", llm_base_url="http://llm:8000/v1", llm_api_key=None
    )
    names = _names(settings)
    assert "registry" not in names and "offline-llm" not in names
    assert settings.schema_registry_url == "http://registry.internal:8081"


def test_one_child_per_processor_worker_with_its_own_data_dir() -> None:
    settings = Settings.model_construct(
        registry_url=None, processor_workers=3, llm_base_url=None, llm_api_key=None
    )
    workers = [child for child in components(settings) if child.component.startswith("processor#")]
    assert [w.component for w in workers] == ["processor#1", "processor#2", "processor#3"]
    assert len({w.env["AGENTLOG_FAUST_DATA_DIR"] for w in workers}) == 3
