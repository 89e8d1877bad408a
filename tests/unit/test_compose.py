"""The multi-machine stack in compose/: valid files, alerts that fire when they should.

No Docker engine runs here, so the stack is checked by the tools that read it:
docker-compose validates the compose file, promtool the Prometheus config, and
promtool's rule tests run every alert against synthetic series. The dashboard and the
alerts may only use metrics the services really export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from landfall import telemetry
from landfall.config import load_settings
from landfall.demo import DEMO_CONFIG

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
STAGES = ("validator", "featurizer", "predictor", "reporter")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs it (make system-deps)"
    return path


def _run(*command: str, cwd: Path = COMPOSE) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors and merges applied)."""
    resolved = _run(_tool("docker-compose"), "-f", "docker-compose.yml", "config")
    return yaml.safe_load(resolved)


def test_the_compose_file_runs_every_service_from_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*STAGES, "api", "spark-master", "spark-worker", "mlflow"):
        assert services[name]["image"] == "landfall:latest", name
    for name in ("kafka", "schema-registry", "postgres", "jaeger", "prometheus", "grafana"):
        assert name in services
    for name in STAGES:
        assert services[name]["command"] == ["landfall", "serve", name]
        assert "/lake" in _mount_points(services[name])
    assert "/lake" in _mount_points(services["spark-worker"])


def _mount_points(service: dict[str, Any]) -> set[str]:
    # docker-compose 1.x writes "source:target:mode"; the compose spec, a mapping.
    return {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service["volumes"]}


def test_only_configuration_changes_beyond_one_machine(compose: dict[str, Any]) -> None:
    environment = compose["services"]["predictor"]["environment"]
    settings = load_settings(DEMO_CONFIG, environ={k: str(v) for k, v in environment.items()})
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.schema_registry_url == "http://schema-registry:8081"
    assert settings.spark.master == "spark://spark-master:7077"
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.results_db_url.startswith("postgresql+psycopg://")
    assert settings.lake == Path("/lake")
    telemetry_settings = settings.telemetry
    assert (telemetry_settings.metrics_host, telemetry_settings.metrics_port) == ("0.0.0.0", 9464)
    assert telemetry_settings.otlp_endpoint == "http://jaeger:4318/v1/traces"
    assert telemetry_settings.trace_dir is None
    assert set(settings.datasets) == {"demo"}  # the same datasets as the demo


def test_every_published_port_is_on_the_host_s_loopback_only(compose: dict[str, Any]) -> None:
    # The job API (and MLflow, Grafana ...) must not face every network of the host.
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            # docker-compose 1.x writes "host_ip:published:target/proto"; the spec, a mapping.
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            published[f"{name} {port}"] = host_ip
    assert any(key.startswith("api ") for key in published)
    assert {key: ip for key, ip in published.items() if ip != "127.0.0.1"} == {}


def test_prometheus_discovers_every_replica_of_each_stage_service_and_loads_the_alerts(
    compose: dict[str, Any],
) -> None:
    output = _run(_tool("promtool"), "check", "config", "prometheus/prometheus.yml")
    assert "7 rules found" in output
    config = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    # Not static targets: a name answered with every replica's address.
    assert "static_configs" not in job
    (discovery,) = job["dns_sd_configs"]
    assert set(discovery["names"]) == set(STAGES) and discovery["type"] == "A"
    port = compose["services"]["validator"]["environment"]["LANDFALL_TELEMETRY__METRICS_PORT"]
    assert discovery["port"] == int(port)


def test_two_replicas_of_each_stage_share_a_cluster_with_a_core_for_each(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    replicas = {name: services[name].get("deploy", {}).get("replicas", 1) for name in STAGES}
    assert replicas == dict.fromkeys(STAGES, 2)
    # Each replica is one Spark application holding spark.cores.max (1 by default on a
    # spark:// master) for its whole life: the workers must offer a core for each.
    settings = load_settings(
        DEMO_CONFIG,
        environ={k: str(v) for k, v in services["validator"]["environment"].items()},
    )
    assert settings.spark.master.startswith("spark://")
    worker = services["spark-worker"]
    command = worker["command"]
    cores = int(command[command.index("--cores") + 1]) * worker.get("deploy", {}).get("replicas", 1)
    assert cores >= sum(replicas.values()), (cores, replicas)


def _image_version(image: str) -> tuple[int, ...]:
    tag = image.rpartition(":")[2].lstrip("v")
    return tuple(int(part) for part in tag.split("."))


def test_current_images_kafka_in_kraft_and_the_same_release_as_the_local_broker(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    pom = (COMPOSE.parent / "landfall" / "jvm" / "kafka-pom.xml").read_text()
    local_release = re.search(r"<kafka.version>([\d.]+)</kafka.version>", pom)
    assert local_release and kafka["image"] == f"apache/kafka:{local_release.group(1)}"
    assert _image_version(kafka["image"])[0] >= 4
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    jaeger = services["jaeger"]["image"]
    assert jaeger.startswith("jaegertracing/jaeger:") and _image_version(jaeger)[0] == 2
    assert _image_version(services["prometheus"]["image"])[0] >= 3
    assert _image_version(services["grafana"]["image"])[0] >= 12


def test_a_seed_service_lands_registers_and_publishes_once_the_stages_are_healthy(
    compose: dict[str, Any],
) -> None:
    seed = compose["services"]["seed"]
    assert seed["command"][:3] == ["landfall", "demo", "--on-running-stack"]
    assert seed["restart"] == "no"
    waits_for = {name for name, dep in seed["depends_on"].items()
                 if dep["condition"] == "service_healthy"}  # fmt: skip
    assert {*STAGES, "kafka", "mlflow"} <= waits_for
    # What the seed waits on can become healthy: each has a health check.
    for name in waits_for:
        check = compose["services"][name]["healthcheck"]
        assert check.get("test") and not check.get("disable"), name


def test_grafana_links_a_batch_duration_to_its_trace_in_jaeger(compose: dict[str, Any]) -> None:
    assert "--enable-feature=exemplar-storage" in compose["services"]["prometheus"]["command"]
    datasources = yaml.safe_load(
        (COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    by_uid = {source["uid"]: source for source in datasources}
    (link,) = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    # The label the services give the exemplar (landfall.telemetry.trace_exemplar).
    assert link["name"] == "trace_id"
    assert by_uid[link["datasourceUid"]]["type"] == "jaeger"
    assert by_uid[link["datasourceUid"]]["url"].startswith("http://jaeger:")
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "landfall.json").read_text())
    with_exemplars = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("exemplar")
    ]
    assert any("landfall_batch_processing_duration_seconds_bucket" in e for e in with_exemplars)


def test_every_alert_fires_when_it_should_and_only_then() -> None:
    output = _run(_tool("promtool"), "test", "rules", "alerts.test.yml", cwd=COMPOSE / "prometheus")
    assert "SUCCESS" in output
    alerts = yaml.safe_load((COMPOSE / "prometheus" / "alerts.yml").read_text())
    names = {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    tested = (COMPOSE / "prometheus" / "alerts.test.yml").read_text()
    assert names == set(re.findall(r"alertname: (\w+)", tested))  # none untested


def _exported_samples() -> set[str]:
    names = {"up"}
    for metric in vars(telemetry).values():
        describe = getattr(metric, "describe", None)
        if callable(describe) and hasattr(metric, "_name"):
            for family in describe():
                kind = family.type
                base = family.name
                if kind == "counter":
                    names.add(f"{base}_total")
                elif kind == "histogram":
                    names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
                else:
                    names.add(base)
    return names


def _metric_names(expr: str) -> set[str]:
    text = re.sub(r'"[^"]*"', "", expr)  # label values
    text = re.sub(r"\b(by|without)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[)])", text))


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "landfall.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_dashboard_and_alerts_use_only_metrics_the_services_export(tmp_path: Path) -> None:
    exported = _exported_samples()
    assert (
        "landfall_processed_rows_total" in exported and "landfall_consumer_lag_messages" in exported
    )
    alerts = yaml.safe_load((COMPOSE / "prometheus" / "alerts.yml").read_text())
    exprs = [*_dashboard_exprs()] + [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used and used <= exported, used - exported
    # Every dashboard query is valid PromQL: promtool parses it as a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"landfall:panel_{i}", "expr": e}
                    for i, e in enumerate(_dashboard_exprs())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    _run(_tool("promtool"), "check", "rules", str(tmp_path / "dashboard.yml"))


def test_the_image_copies_what_exists_and_grafana_finds_its_dashboard() -> None:
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (COMPOSE.parent / source).exists(), source
    provider = yaml.safe_load(
        (COMPOSE / "grafana" / "provisioning" / "dashboards" / "landfall.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load(
        (COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "landfall.json").read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}


def test_postgres_initialisation_does_not_create_its_own_database_twice(
    compose: dict[str, Any],
) -> None:
    # The image creates POSTGRES_DB itself; an init script creating it again aborts the
    # initialisation, and every service waiting on PostgreSQL never starts.
    own = compose["services"]["postgres"]["environment"]["POSTGRES_DB"]
    script = (COMPOSE / "postgres" / "init.sql").read_text()
    created = re.findall(r"CREATE DATABASE\s+(\w+)", script, flags=re.IGNORECASE)
    assert own not in created and created == ["mlflow"]
    worker = compose["services"]["spark-worker"]["command"]
    assert int(worker[worker.index("--cores") + 1]) >= 4  # one per stage service
