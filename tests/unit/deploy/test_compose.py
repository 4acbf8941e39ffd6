"""deploy/compose.yaml, the Prometheus config and Grafana's provisioning: they parse and hang together
(every service the issue names, references between services, files mounted that exist)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.unit.deploy.references import DEPLOY

STACK = {"kafka", "elasticsearch", "postgres", "redis"}
PLATFORM = {
    "prepare",
    "registry",
    "api",
    "processor",
    "projector-postgres",
    "projector-elasticsearch",
    "auditor",
}
TOOLING = {"prometheus", "grafana", "kafka-ui"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_every_service() -> None:
    services = _compose()["services"]
    assert STACK | PLATFORM | TOOLING <= set(services)


def test_the_service_stack_alone_still_starts_by_default() -> None:
    # `docker compose up` without a profile keeps meaning the four services of deploy/local.
    services = _compose()["services"]
    assert {name for name, service in services.items() if not service.get("profiles")} == STACK
    assert all(services[name]["profiles"] == ["platform"] for name in PLATFORM | TOOLING)


def test_kafka_runs_in_kraft_mode() -> None:
    env = _compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env


def test_platform_services_run_their_component_from_the_image() -> None:
    services = _compose()["services"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["agentlog", "run"]' in dockerfile
    from api.cli import COMPONENTS

    for name in PLATFORM - {"prepare"}:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert service["command"] == [name] and name in COMPONENTS, name
        env = service["environment"]
        assert env["AGENTLOG_KAFKA_BOOTSTRAP"] == "kafka:19092", name
    assert services["prepare"]["entrypoint"] == ["agentlog"]
    assert services["prepare"]["command"] == ["prepare"]


def test_settings_in_compose_are_settings_the_platform_reads() -> None:
    from streams.settings import Settings

    fields = {f"AGENTLOG_{name.upper()}" for name in Settings.model_fields}
    # Read by the metrics wiring (streams/metrics.py serve_metrics), not by Settings yet.
    pending = {"AGENTLOG_METRICS_PORT"}
    for name, service in _compose()["services"].items():
        if "build" not in service:
            continue
        unknown = {key for key in service["environment"] if key.startswith("AGENTLOG_") and key not in fields}
        assert unknown <= pending, (name, unknown)


def test_dependencies_name_existing_services() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert set(depends) <= set(services), name
    assert services["api"]["depends_on"]["prepare"] == {"condition": "service_completed_successfully"}


def test_processor_scales_by_replicas() -> None:
    assert "replicas" in _compose()["services"]["processor"]["deploy"]
    assert "--scale processor=" in (DEPLOY / "compose.yaml").read_text()


def test_mounted_files_and_named_volumes_exist() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)


def test_prometheus_scrapes_every_platform_component_and_loads_the_alerts() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]  # ./prometheus is mounted there
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for component in PLATFORM - {"prepare"}:
        job = jobs[f"agentlog-{component}"]
        (target,) = job["dns_sd_configs"]
        assert target["names"] == [component]
        assert target["port"] == (8000 if component == "api" else 9100)


def test_grafana_provisions_the_datasource_the_dashboards_use() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "agentlog.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        (variable,) = [
            v for v in json.loads(path.read_text())["templating"]["list"] if v["type"] == "datasource"
        ]
        assert variable["current"]["value"] == source["uid"], path.name
