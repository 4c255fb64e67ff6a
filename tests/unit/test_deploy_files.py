"""The deployment files parse and agree with the code.

Docker is not needed: docker-compose.yml, the Prometheus, Alertmanager and
Grafana files and the dashboard are read as YAML/JSON and checked against
:class:`streams.settings.Env` and the collectors :mod:`streams.metrics` registers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "crmstream.json"

KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")
SERVICES = (*KAFKA_NODES, "redis", "prometheus", "alertmanager", "grafana", "worker")
# ${VAR}, ${VAR:-default}, ${VAR:?error}, ... but not $$VAR (a literal $ for the container).
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
REQUIRED_VAR = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")
METRIC = re.compile(r"crm_[a-z_]+")
SECRET_KEY = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.IGNORECASE)


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either compose form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _strings(node: Any) -> Iterator[str]:
    """Every string value (not key) in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _volume_source(entry: Any) -> str | None:
    if isinstance(entry, dict):
        return entry.get("source")
    parts = str(entry).split(":")
    return parts[0] if len(parts) > 1 else None


def _is_named_volume(source: str) -> bool:
    return not source.startswith((".", "/", "~", "$"))


def _mount_targets(service: dict[str, Any]) -> dict[str, str]:
    """source -> target for each volume entry with a source."""
    mounts = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts[entry["source"]] = entry["target"]
        else:
            parts = str(entry).split(":")
            if len(parts) > 1:
                mounts[parts[0]] = parts[1]
    return mounts


# --- docker-compose.yml -------------------------------------------------------


def test_compose_has_every_service(services: dict[str, Any]) -> None:
    missing = [name for name in SERVICES if name not in services]
    assert not missing, f"services missing from docker-compose.yml: {missing}"


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    assert set(SERVICES) <= set(services)
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name}: neither image nor build"
            continue
        reference = image.split("@", 1)[0]
        last = reference.rsplit("/", 1)[-1]
        assert ":" in last or "@" in image, f"{name}: image {image!r} has no tag"
        tag = last.rsplit(":", 1)[-1] if ":" in last else ""
        assert tag != "latest", f"{name}: image {image!r} is not pinned"


def test_worker_is_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    build = services["worker"]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == (ROOT / "Dockerfile").resolve()
    assert (ROOT / "Dockerfile").is_file()


def test_worker_is_scalable(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "container_name prevents --scale worker=N"
    for port in worker.get("ports") or []:
        if isinstance(port, dict):
            fixed = port.get("published") not in (None, "")
        else:
            fixed = ":" in str(port)
        assert not fixed, f"worker publishes a fixed host port ({port!r}): --scale would clash"


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    assert set(SERVICES) <= set(services)
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


def test_worker_healthcheck_gets_livez(services: dict[str, Any]) -> None:
    test = services["worker"]["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else test
    assert "python" in text and "urllib" in text and "/livez" in text


def test_dependencies_wait_for_health(services: dict[str, Any]) -> None:
    worker_deps = services["worker"].get("depends_on")
    assert isinstance(worker_deps, dict), "worker.depends_on must use the long form"
    assert {*KAFKA_NODES, "redis"} <= set(worker_deps)
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"


def test_redis_requires_a_password(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    args = command if isinstance(command, list) else command.split()
    assert "--requirepass" in args
    password = args[args.index("--requirepass") + 1]
    assert REQUIRED_VAR.match(password), f"--requirepass {password!r} is not ${{VAR:?...}}"
    test = services["redis"]["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else test
    assert "redis-cli" in text and "-a" in text.split()


def test_worker_environment_uses_settings_names(services: dict[str, Any]) -> None:
    from streams.settings import Env

    known = {v for k, v in vars(Env).items() if not k.startswith("_") and isinstance(v, str)}
    env = _environment(services["worker"])
    ours = [k for k in env if k.startswith("CRM_") or k in ("KAFKA_BROKER", "REDIS_URL")]
    unknown = sorted(set(ours) - known)
    assert not unknown, f"worker.environment names not in streams.settings.Env: {unknown}"
    brokers = env.get("KAFKA_BROKER", "").split(";")
    assert brokers == [f"kafka://{node}:9092" for node in KAFKA_NODES]
    assert env.get("REDIS_URL", "").startswith("redis://redis:6379")
    assert env.get("REDIS_PASSWORD", "").startswith("${REDIS_PASSWORD:?"), (
        "the worker must get the required Redis password"
    )
    assert env.get("CRM_WEB_HOST") == "0.0.0.0"


def _default(value: str) -> str:
    """The default of a compose ``${VAR:-default}`` value (or the value itself)."""
    found = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", value)
    return found.group(1) if found else value


def test_production_topics_have_three_replicas_two_in_sync_and_a_standby(
    services: dict[str, Any],
) -> None:
    from streams.settings import Env

    env = _environment(services["worker"])
    assert _default(env[Env.REPLICATION_FACTOR]) == "3"
    assert _default(env[Env.MIN_INSYNC_REPLICAS]) == "2"
    assert _default(env[Env.STANDBY_REPLICAS]) == "1"
    assert _default(env[Env.ASSIGNMENT_TIMEOUT]) == "60"
    assert _default(env[Env.CHANGELOG_SEAL]) == "0"  # Apache Kafka: end offsets are exact


def test_the_kafka_cluster_can_hold_three_replicas(services: dict[str, Any]) -> None:
    voters = set()
    ids = set()
    for node in KAFKA_NODES:
        env = _environment(services[node])
        assert "broker" in env["KAFKA_PROCESS_ROLES"], node
        ids.add(env["KAFKA_NODE_ID"])
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith(f"PLAINTEXT://{node}:9092"), node
        # the cluster's own defaults match crmstream's: 3 replicas, 2 in sync
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert _mount_targets(services[node]).get(f"{node}-data") == "/var/lib/kafka/data"
    assert ids == {"1", "2", "3"}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}  # one quorum of three


def test_prometheus_mounts_config_and_rules(services: dict[str, Any]) -> None:
    mounts = _mount_targets(services["prometheus"])
    assert mounts.get("./deploy/prometheus/prometheus.yml") == "/etc/prometheus/prometheus.yml"
    assert mounts.get("./deploy/prometheus/rules") == "/etc/prometheus/rules"
    for source in mounts:
        if not _is_named_volume(source):
            assert (ROOT / source).exists(), f"prometheus mounts missing {source}"


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    binds = [
        (name, source)
        for name, service in services.items()
        for source in _mount_targets(service)
        if source.startswith("./")
    ]
    assert len(binds) >= 5, binds  # the Prometheus, Alertmanager and Grafana configuration
    for name, source in binds:
        assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_no_literal_secrets(compose: dict[str, Any], services: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"(?i)password\s*=\s*(?!\$\{)\S", text), "literal password= in compose"
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_KEY.search(key):
                assert REQUIRED_VAR.match(value), f"{name}.{key} must be ${{VAR:?...}}"
    for value in _strings(compose):
        # A URL's userinfo password, as in redis://:secret@host.
        for userinfo in re.findall(r"://([^/]*)@", value):
            if ":" in userinfo:
                password = userinfo.split(":", 1)[1]
                assert REQUIRED_VAR.match(password), f"literal password in URL {value!r}"


def test_named_volumes_are_declared_and_used(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = set(compose.get("volumes") or {})
    assert declared, "no named volumes declared"
    used = {
        source
        for service in services.values()
        for entry in service.get("volumes") or []
        if (source := _volume_source(entry)) and _is_named_volume(source)
    }
    assert used - declared == set(), f"undeclared named volumes: {sorted(used - declared)}"
    assert declared - used == set(), f"declared but unused volumes: {sorted(declared - used)}"


def test_env_example_lists_every_compose_variable() -> None:
    used = set(COMPOSE_VAR.findall(COMPOSE.read_text(encoding="utf-8")))
    listed = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    missing = sorted(used - listed)
    assert not missing, f".env.example lacks {missing}"


def test_env_example_holds_no_secret_values() -> None:
    secrets = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        key, value = line.split("=", 1)
        if SECRET_KEY.search(key):
            assert value.strip() == "", f".env.example gives {key} a value"
            secrets.add(key)
    assert {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= secrets


# --- Prometheus, Alertmanager -------------------------------------------------


def test_prometheus_scrapes_every_worker() -> None:
    config = _load_yaml(PROMETHEUS_YML)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["crmstream"]["dns_sd_configs"]
    assert any(
        "worker" in entry["names"] and entry.get("type", "SRV") == "A" and entry.get("port") == 6066
        for entry in sd
    )
    assert "/etc/prometheus/rules/*.yml" in config["rule_files"]
    targets = [
        target
        for am in config["alerting"]["alertmanagers"]
        for static in am.get("static_configs", [])
        for target in static["targets"]
    ]
    assert "alertmanager:9093" in targets


@pytest.fixture(scope="module")
def alert_rules() -> dict[str, dict[str, Any]]:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files, "no rule files in deploy/prometheus/rules"
    rules = {}
    for path in files:
        for group in _load_yaml(path)["groups"]:
            assert group["rules"], f"{path.name}: empty group {group['name']}"
            for rule in group["rules"]:
                if "alert" in rule:
                    rules[rule["alert"]] = rule
    return rules


def test_alert_rules(alert_rules: dict[str, dict[str, Any]]) -> None:
    down = alert_rules["CrmstreamWorkerDown"]
    assert down["expr"].replace(" ", "") == 'up{job="crmstream"}==0'
    assert down["for"] == "2m" and down["labels"]["severity"] == "critical"
    dead = alert_rules["CrmstreamDeadLettersHigh"]
    assert "crm_dead_letters_total" in dead["expr"] and "crm_events_in_total" in dead["expr"]
    assert dead["for"] == "10m" and dead["labels"]["severity"] == "warning"
    for name, rule in alert_rules.items():
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        assert annotations["runbook_url"].endswith(f"deploy/RUNBOOK.md#{name.lower()}")


def test_alertmanager_config() -> None:
    config = _load_yaml(ALERTMANAGER_YML)
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers


# --- Grafana ------------------------------------------------------------------


def test_grafana_provisioning() -> None:
    datasources = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    prometheus = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    assert prometheus and prometheus[0]["url"] == "http://prometheus:9090"
    providers = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "crmstream.yml")
    paths = [p["options"]["path"] for p in providers["providers"]]
    assert "/var/lib/grafana/dashboards" in paths


def test_grafana_mounts(services: dict[str, Any]) -> None:
    mounts = _mount_targets(services["grafana"])
    assert mounts.get("./deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    assert mounts.get("./deploy/grafana/dashboards") == "/var/lib/grafana/dashboards"
    password = _environment(services["grafana"]).get("GF_SECURITY_ADMIN_PASSWORD", "")
    assert REQUIRED_VAR.match(password)


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    """Every sample name the collectors of streams.metrics can expose."""
    from prometheus_client import REGISTRY

    import streams.metrics  # noqa: F401  (registers the collectors)

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    return exprs


def test_dashboard_is_a_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p.get("targets") and p.get("gridPos") for p in panels)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_dashboard_metrics_exist(exported_names: set[str]) -> None:
    exprs = _dashboard_exprs()
    assert exprs
    referenced = {name for expr in exprs for name in METRIC.findall(expr)}
    unknown = sorted(referenced - exported_names)
    assert not unknown, f"dashboard uses metrics streams.metrics does not define: {unknown}"


def test_alert_rule_metrics_exist(
    alert_rules: dict[str, dict[str, Any]], exported_names: set[str]
) -> None:
    referenced = {name for rule in alert_rules.values() for name in METRIC.findall(rule["expr"])}
    unknown = sorted(referenced - exported_names)
    assert not unknown, f"alert rules use metrics streams.metrics does not define: {unknown}"


@pytest.mark.parametrize(
    "needed",
    [
        "crm_events_in_total",
        "crm_dead_letters_total",
        "crm_actions_total",
        "crm_processing_latency_seconds_bucket",
        "crm_batch_records",
        "crm_state_writes_total",
        "crm_ledger_errors_total",
        "crm_worker_ready",
    ],
)
def test_dashboard_covers(needed: str) -> None:
    assert any(needed in expr for expr in _dashboard_exprs()), f"no panel on {needed}"


def test_dashboard_latency_quantiles() -> None:
    exprs = [e for e in _dashboard_exprs() if "crm_processing_latency_seconds_bucket" in e]
    assert any("histogram_quantile(0.5," in e for e in exprs)
    assert any("histogram_quantile(0.95," in e for e in exprs)


# --- issue 6: the catalog behind every panel, every alert the issue lists ------

CATALOG = DEPLOY / "METRICS.md"
RECORDED = re.compile(r"crmstream:[a-z0-9_:]+")


def _catalog_names() -> set[str]:
    names = set()
    for line in CATALOG.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`crm_"):
            names.add(cells[0].strip("`"))
    return names


def _recording_rules() -> set[str]:
    return {
        rule["record"]
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in _load_yaml(path)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def test_every_dashboard_expression_uses_catalogued_metrics_or_recording_rules() -> None:
    catalog = _catalog_names()
    histogram_parts = re.compile(r"_(bucket|sum|count)$")
    unknown = set()
    for expr in _dashboard_exprs():
        for name in METRIC.findall(expr):
            if name not in catalog and histogram_parts.sub("", name) not in catalog:
                unknown.add(name)
        unknown.update(set(RECORDED.findall(expr)) - _recording_rules())
    assert not unknown, (
        f"dashboard expressions use names not in deploy/METRICS.md: {sorted(unknown)}"
    )


@pytest.mark.parametrize(
    "needed",
    [
        "crm_consumer_lag_records",
        "crm_table_recovery_remaining_records",
        "crm_projection_queue_customers",
        "crm_projection_errors_total",
        "sum by (decision) (rate(crm_actions_total",
        "crm_action_decisions_total",
        "crm_action_latency_seconds_bucket",
        "crm_customers_by_stage",
        "crm_customers_by_rfm_group",
        "crm_flags_total",
        "crm_complaints_opened_total",
        "crm_complaints_open{",
        "crm_complaint_week_over_week_ratio",
        "crm_sla_breaches_total",
        "crm_sla_met_total",
        "crm_timers_pending",
        "crm_timers_overdue",
        "crm_timer_fire_delay_seconds_bucket",
        "sum by (topic, code) (rate(crm_dead_letters_total",
    ],
)
def test_dashboard_covers_the_catalog(needed: str) -> None:
    assert any(needed in expr for expr in _dashboard_exprs()), f"no panel on {needed}"


ISSUE_ALERTS = {
    "CrmstreamComplaintSurgeYellow": ("crm_complaint_week_over_week_ratio", "warning"),
    "CrmstreamComplaintSurgeRed": ("crm_complaint_week_over_week_ratio", "critical"),
    "CrmstreamSlaBreachRateHigh": ("crm_sla_breaches_total", "warning"),
    "CrmstreamDeadLettersHigh": ("crm_dead_letters_total", "warning"),
    "CrmstreamDeadLettersAboveBaseline": ("crmstream:dead_letter_ratio:rate5m", "warning"),
    "CrmstreamActionsStalled": ("crm_actions_total", "warning"),
    "CrmstreamConsumerLagGrowing": ("crm_consumer_lag_records", "warning"),
    "CrmstreamReturnAbuseFlagSpike": ('kind="repeated_returns"', "warning"),
    "CrmstreamWorkerDown": ("up", "critical"),
    "CrmstreamWorkersAbsent": ("absent(up", "critical"),
    "CrmstreamWorkerNotReady": ("crm_worker_ready", "warning"),
    "CrmstreamRedisProjectionFailing": ("crm_projection_errors_total", "warning"),
    "CrmstreamTimersOverdue": ("crm_timers_overdue", "warning"),
}


@pytest.mark.parametrize("name", sorted(ISSUE_ALERTS))
def test_every_alert_the_issue_lists_exists(
    name: str, alert_rules: dict[str, dict[str, Any]]
) -> None:
    assert name in alert_rules, f"no alert {name} in deploy/prometheus/rules/"
    needle, severity = ISSUE_ALERTS[name]
    assert needle in alert_rules[name]["expr"]
    assert alert_rules[name]["labels"]["severity"] == severity


def test_complaint_surge_lights_are_the_domain_thresholds(
    alert_rules: dict[str, dict[str, Any]],
) -> None:
    # domain.md §5: > 50 % week over week; the red light at doubling.
    assert "> 1.5" in alert_rules["CrmstreamComplaintSurgeYellow"]["expr"]
    assert ">= 2" in alert_rules["CrmstreamComplaintSurgeRed"]["expr"]
    inhibit = _load_yaml(ALERTMANAGER_YML)["inhibit_rules"]
    assert any(
        'alertname="CrmstreamComplaintSurgeRed"' in r["source_matchers"][0]
        and 'alertname="CrmstreamComplaintSurgeYellow"' in r["target_matchers"][0]
        and r["equal"] == ["complaint_type"]
        for r in inhibit
    )


def test_the_image_build_context_holds_what_the_dockerfile_installs_from() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    dockerfile = (ROOT / "Dockerfile").read_text()

    # The pinned versions the tests passed with, and the package's own metadata
    assert "-c constraints.txt" in dockerfile
    assert {"constraints.txt", "pyproject.toml", "README.md"} <= allowed
    # Every package directory the wheel is built from
    assert {"schemas", "agents", "streams"} <= allowed


# --- issue 15: the handbooks' KPIs -----------------------------------------------


def test_the_dashboard_has_a_kpi_row_showing_every_kpi_record() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert any(p["type"] == "row" and p["title"].startswith("KPIs") for p in dashboard["panels"])
    kpis = {name for name in _recording_rules() if name.startswith("crmstream:kpi_")}
    shown = {name for expr in _dashboard_exprs() for name in RECORDED.findall(expr)}
    assert kpis and not kpis - shown, f"KPI records not on the dashboard: {sorted(kpis - shown)}"


def test_every_kpi_record_is_defined_in_the_catalog() -> None:
    catalog = CATALOG.read_text(encoding="utf-8")
    kpis = {name for name in _recording_rules() if name.startswith("crmstream:kpi_")}
    missing = sorted(name for name in kpis if name.split(":p")[0] not in catalog)
    assert not missing, f"KPI records deploy/METRICS.md does not define: {missing}"


def test_satisfaction_alert_is_the_handbooks_target(
    alert_rules: dict[str, dict[str, Any]],
) -> None:
    # domain.md §8: satisfaction >= 85 %, over a week.
    expr = alert_rules["CrmstreamSatisfactionLow"]["expr"]
    assert "crmstream:kpi_satisfaction_rate:7d < 0.85" in expr
