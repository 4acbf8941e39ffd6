"""The one settings object of agentlog, read from the environment (prefix ``AGENTLOG_``).

Every process (API, schema registry, processors, projectors, CLI) takes its configuration from
:func:`get_settings`; ports default to the local stack in ``deploy/local``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _port(variable: str, default: int) -> str:
    # The same AGENTLOG_*_PORT variables move the local stack (deploy/local) and the platform.
    return os.environ.get(variable, str(default))


class Settings(BaseSettings):
    """Configuration for every agentlog process."""

    model_config = SettingsConfigDict(env_prefix="AGENTLOG_", extra="ignore")

    kafka_bootstrap: str = Field(
        default_factory=lambda: f"127.0.0.1:{_port('AGENTLOG_KAFKA_PORT', 9092)}",
        description="Kafka bootstrap servers.",
    )
    topic_prefix: str = Field(default="agentlog", description="Prefix of every agentlog topic name.")
    topic_partitions: int = Field(default=6, ge=1, description="Partitions of the task topics.")

    registry_host: str = "127.0.0.1"
    registry_port: int = 8081
    registry_url: str | None = Field(
        default=None, description="Schema registry URL; defaults to http://registry_host:registry_port."
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    jwt_secret: str | None = Field(
        default=None,
        description="HS256 secret of the JWT bearer tokens the API accepts; unset: API keys only.",
    )
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of JWTs, when set.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` of JWTs, when set.")
    api_rate_per_second: float = Field(
        default=50.0, gt=0, description="Requests per second a key may make (its own limit wins)."
    )
    api_rate_burst: int = Field(default=100, ge=1, description="Requests a key may make at once.")
    api_after_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="Longest wait of a query's ?after= (read-your-writes)."
    )

    postgres_dsn: str = Field(
        default_factory=lambda: (
            f"postgresql://agentlog:agentlog@127.0.0.1:{_port('AGENTLOG_PG_PORT', 5432)}/agentlog"
        )
    )
    elasticsearch_url: str = Field(
        default_factory=lambda: f"http://127.0.0.1:{_port('AGENTLOG_ES_PORT', 9200)}"
    )
    es_index_prefix: str = Field(default="agentlog-audit", description="Prefix of the audit index and alias.")
    redis_url: str = Field(
        default_factory=lambda: f"redis://127.0.0.1:{_port('AGENTLOG_REDIS_PORT', 6379)}/0"
    )

    # LLM: with no endpoint configured the offline planner (an OpenAI-compatible server on loopback)
    # answers, so the platform runs on a machine with no network.
    llm_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    llm_api_key: str | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    llm_model: str = "gpt-4o-mini"
    offline_llm_port: int = 8090
    llm_timeout_seconds: float = 60.0
    # The LLM gateway (processors/llm/gateway.py, docs/llm-gateway.md).
    llm_providers_file: Path | None = Field(
        default=None, description="YAML providers file; none: the offline planner, or OPENAI_BASE_URL."
    )
    llm_attempts_per_provider: int = Field(
        default=3, ge=1, description="Tries of one provider before the next."
    )
    llm_backoff_initial_seconds: float = Field(default=0.2, ge=0)
    llm_backoff_max_seconds: float = Field(default=5.0, ge=0)
    llm_breaker_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    llm_breaker_min_calls: int = Field(default=4, ge=1)
    llm_breaker_window_seconds: float = Field(default=30.0, gt=0)
    llm_breaker_cooldown_seconds: float = Field(default=10.0, gt=0)
    llm_cache_enabled: bool = Field(default=True, description="Exact and semantic prompt cache in Redis.")
    llm_cache_ttl_seconds: int = Field(default=3600, ge=1)
    llm_cache_semantic_threshold: float = Field(default=0.95, gt=0, le=1)
    llm_budget_completion_tokens: int = Field(default=1024, ge=0)
    llm_stream_tokens: bool = Field(
        default=False,
        description="Stream answers; their tokens go to Redis for GET /v1/tasks/{id}/stream.",
    )
    max_steps: int = Field(default=8, ge=1, description="Agent loop step limit of each agent of a task.")
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts of one failed LLM or tool call, with durable backoff between."
    )
    max_parallel: int = Field(default=3, ge=1, description="Most subtasks of one task running at once.")
    task_token_budget: int | None = Field(
        default=None, ge=1, description="Tokens a task may use unless its submission sets its own budget."
    )
    org_daily_budget_usd: float | None = Field(
        default=None, gt=0, description="Daily USD budget of every org (alert at 80 %); None: no limit."
    )
    org_budgets_usd: dict[str, float] = Field(
        default_factory=dict,
        description='Per-org daily USD budgets, JSON: {"acme": 25.0}; override the default.',
    )
    policy_dir: str | None = Field(
        default=None,
        description="Directory of per-org tool policy files (<org_id>.cedar); None: defaults only.",
    )
    workspace_dir: str = Field(
        default=".agentlog/workspaces", description="Parent of each task's tool workspace directory."
    )
    sandbox_wall_seconds: float = Field(
        default=30.0, gt=0, description="Wall-clock limit of a sandboxed program."
    )
    sandbox_cpu_seconds: int = Field(default=10, ge=1, description="CPU-time limit of a sandboxed program.")
    tool_http_allow_hosts: list[str] = Field(
        default_factory=list, description='Hosts the http_fetch tool may reach, JSON: ["docs.example.com"].'
    )

    worker_concurrency: int = Field(default=32, ge=1, description="Tasks one processor advances at once.")
    processor_workers: int = Field(
        default=1, ge=1, description="Processor processes `serve` runs (they share the task partitions)."
    )
    projection_fetch_min_bytes: int = Field(default=65536, ge=1)
    projection_fetch_max_wait_ms: int = Field(
        default=10, ge=0, description="Longest a projector's fetch waits to fill a batch."
    )
    faust_data_dir: str = ".agentlog/data/faust"
    metrics_port: int = Field(
        default=9100,
        ge=0,
        le=65535,
        description="Where a worker (processor, projector, auditor) serves /metrics; `serve` gives its"
        " children this port plus an offset each (api/supervisor.py); 0: any free port (logged)."
        " The API serves /metrics on api_port.",
    )

    # Tracing and logs (streams/tracing.py, streams/logs.py, docs/operations.md).
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AGENTLOG_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318); unset: no OTLP export.",
    )
    trace_file: Path | None = Field(
        default=None, description="Append every finished span to this file as a JSON line; unset: none."
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines of `agentlog run` components: JSON objects, or text."
    )
    log_level: str = Field(default="INFO", description="Level of the components' root logger.")

    @property
    def tracing(self) -> bool:
        """True when spans are exported somewhere (otherwise the no-op tracer runs)."""
        return bool(self.otlp_endpoint or self.trace_file)

    def org_budget_for(self, org_id: str) -> float | None:
        """The org's daily USD budget: its own, else the default for every org."""
        return self.org_budgets_usd.get(org_id, self.org_daily_budget_usd)

    @property
    def schema_registry_url(self) -> str:
        return self.registry_url or f"http://{self.registry_host}:{self.registry_port}"

    @property
    def offline(self) -> bool:
        """True when no real LLM endpoint is configured and the offline planner answers."""
        return not (self.llm_base_url or self.llm_api_key)

    @property
    def llm_endpoint(self) -> str:
        if self.llm_base_url:
            return self.llm_base_url
        if self.llm_api_key:
            return "https://api.openai.com/v1"
        return f"http://127.0.0.1:{self.offline_llm_port}/v1"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
