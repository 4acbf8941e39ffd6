"""deploy/k8s: the manifests pass the Kubernetes schema (kubernetes-validate, offline, strict), and
carry what the issue asks for: Deployments, probes, PDBs, requests, the HPA on consumer lag, the
topic Job."""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.references import (
    DEPLOY,
    adapter_expressions,
    exported_series,
    load_yaml_documents,
    unknown_metrics,
)

BASE = DEPLOY / "k8s" / "base"
KUBERNETES_VERSION = "1.33.0"
WORKERS = {"processor", "projector-postgres", "projector-elasticsearch", "auditor", "registry"}


def _resources() -> list[dict[str, Any]]:
    """The base's resources, read file by file as the kustomization lists them (no kustomize needed:
    the files carry their names, labels and namespace themselves)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_yaml_documents(BASE / name)]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _resources() if doc["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_every_file_of_the_base_is_listed_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    on_disk = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_every_manifest_passes_the_strict_schema() -> None:
    resources = _resources()
    assert len(resources) >= 15
    for resource in resources:
        # strict: an unknown (say misspelt) field is an error, not silently dropped by the API server.
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(_by_kind("Deployment")["agentlog-api"])
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    misspelt = copy.deepcopy(_by_kind("Deployment")["agentlog-api"])
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)


def test_kustomize_builds_the_same_resources_in_the_namespace() -> None:
    # kubectl ships with the machine image; a missing one fails here rather than skipping.
    assert shutil.which("kubectl"), "kubectl (with its kustomize) is needed to build deploy/k8s"
    built = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    documents = [doc for doc in yaml.safe_load_all(built) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in documents) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in _resources()
    )
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "agentlog"
    images = {
        c["image"]
        for d in documents
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"agentlog:0.1.0"}


def test_separate_deployments_run_each_component() -> None:
    deployments = _by_kind("Deployment")
    assert set(deployments) == {f"agentlog-{name}" for name in WORKERS | {"api"}}
    for name, deployment in deployments.items():
        component = name.removeprefix("agentlog-")
        assert _container(deployment)["args"] == [component]


def test_every_container_has_requests_and_a_memory_limit() -> None:
    workloads = [*_by_kind("Deployment").values(), *_by_kind("Job").values()]
    for workload in workloads:
        resources = _container(workload)["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), workload["metadata"]["name"]
        assert "memory" in resources["limits"], workload["metadata"]["name"]


def test_the_api_is_probed_on_healthz_and_readyz() -> None:
    api = _container(_by_kind("Deployment")["agentlog-api"])
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_workers_are_probed_on_their_metrics_port() -> None:
    for name in WORKERS - {"registry"}:
        container = _container(_by_kind("Deployment")[f"agentlog-{name}"])
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["metrics"] == 9100
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, name


def test_every_deployment_has_a_disruption_budget_selecting_its_pods() -> None:
    budgets = _by_kind("PodDisruptionBudget")
    for name, deployment in _by_kind("Deployment").items():
        budget = budgets[name]["spec"]
        assert budget["selector"] == deployment["spec"]["selector"], name
        # A budget that allows no disruption of a one-replica Deployment blocks every node drain.
        if deployment["spec"]["replicas"] == 1:
            assert budget.get("maxUnavailable") == 1, name


def test_the_processor_autoscaler_scales_on_consumer_lag_up_to_the_partition_count() -> None:
    hpa = _by_kind("HorizontalPodAutoscaler")["agentlog-processor"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "agentlog-processor",
    }
    partitions = int(_by_kind("ConfigMap")["agentlog-settings"]["data"]["AGENTLOG_TOPIC_PARTITIONS"])
    assert hpa["maxReplicas"] == partitions  # workers <= partitions
    (metric,) = hpa["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "agentlog_consumer_lag_records"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"group": "agentlog-processor"}


def test_the_adapter_rule_serves_the_autoscalers_metric_from_exported_series() -> None:
    config = yaml.safe_load(_by_kind("ConfigMap")["agentlog-prometheus-adapter-rules"]["data"]["config.yaml"])
    assert unknown_metrics(adapter_expressions(config), exported_series()) == []
    exposed = {rule["name"]["as"] for rule in config["externalRules"]}
    wanted = {
        m["external"]["metric"]["name"]
        for hpa in _by_kind("HorizontalPodAutoscaler").values()
        for m in hpa["spec"]["metrics"]
        if m["type"] == "External"
    }
    assert wanted <= exposed


def test_topics_are_provisioned_by_a_job() -> None:
    job = _by_kind("Job")["agentlog-prepare"]
    container = _container(job)
    assert container["command"] == ["agentlog", "prepare"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}


def test_settings_come_from_the_config_map_and_an_optional_secret() -> None:
    for workload in [*_by_kind("Deployment").values(), *_by_kind("Job").values()]:
        sources = _container(workload)["envFrom"]
        assert {"configMapRef": {"name": "agentlog-settings"}} in sources
        assert {"secretRef": {"name": "agentlog-secrets", "optional": True}} in sources
