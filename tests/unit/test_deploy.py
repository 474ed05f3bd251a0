"""deploy/ and docker-compose.yml: Prometheus rules checked and unit-tested with promtool,
the compose file names every service SPEC lists, the Grafana dashboard parses and its
queries are valid PromQL. (No Docker engine here: the stack itself is not started.)"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "cdrwatch.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "cdrwatch.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "cdrwatch.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

CDRWATCH_SERVICES = {
    "ingest": '["ingest"]',
    "detector": '["detector", "--stage", "cdrs"]',
    "detector-callees": '["detector", "--stage", "callees"]',
    "api": '["api"]',
    "topics": '["topics"]',
}
INFRASTRUCTURE = ("kafka", "postgres", "prometheus", "alertmanager", "grafana")
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
ALERTS = (
    "CdrwatchSilentRateViolation",
    "CdrwatchAbandonedRateViolation",
    "CdrwatchRateWarning",
    "CdrwatchComplianceAlertFiring",
    "CdrwatchCampaignFeedStalled",
    "CdrwatchDetectorLagHigh",
    "CdrwatchCalleeStageStalled",
    "CdrwatchDetectorStageConflict",
    "CdrwatchIngestRejectsHigh",
)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found (Debian package prometheus). run: make system-deps",
            pytrace=False,
        )
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


# -- Prometheus ------------------------------------------------------------------------------


def test_prometheus_config_and_rules_pass_promtool_check(tmp_path: Path) -> None:
    promtool = _promtool()
    # The api's scrape token is created by the operator (secrets/ is not committed): check
    # a copy of the directory with a stand-in token.
    copy = shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    (copy / "secrets" / "api-metrics-token").write_text("cdrw_stand-in\n")
    config = _run(promtool, "check", "config", str(copy / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _run(promtool, "check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in rules.stdout


def test_every_alert_rule_passes_its_promtool_unit_tests() -> None:
    result = _run(_promtool(), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tests = RULE_TESTS.read_text()
    for alert in ALERTS:
        assert f"alertname: {alert}" in tests, f"no promtool test exercises {alert}"


def test_alert_rules_hard_code_no_cap_and_page_on_the_detectors_verdict() -> None:
    """Issue 8: `> 0.03` paged a 1-call campaign and Italian campaigns on abandoned calls;
    caps, profiles and minimum samples live in the exported verdict and cap gauges."""
    text = RULES.read_text()
    expressions = re.findall(r"expr: (?:>-\n)?((?:.+\n)+?)\s+(?:for|labels):", text)
    assert len(expressions) == len(ALERTS)
    for expr in expressions:
        assert not re.search(r"0\.0\d|\b3 ?%", expr), expr
        assert "profile" not in expr, expr
        if "cdrwatch_campaign_rate" in expr:
            pytest.fail(f"a rule on the raw rate ignores the minimum sample: {expr}")


def test_alert_rules_carry_severity_and_annotations() -> None:
    text = RULES.read_text()
    blocks = re.split(r"\n\s+- alert: ", text)[1:]
    assert sorted(block.split("\n", 1)[0].strip() for block in blocks) == sorted(ALERTS)
    for block in blocks:
        name = block.split("\n", 1)[0].strip()
        assert re.search(r"severity: (violation|warning)\n", block), name
        assert "summary:" in block and "description:" in block, name


def test_prometheus_scrapes_api_ingest_and_every_detector_replica() -> None:
    text = PROMETHEUS_CONFIG.read_text()
    assert '"api:8080"' in text
    api_job = text.split("job_name: cdrwatch-api", 1)[1].split("job_name:", 1)[0]
    assert "credentials_file: secrets/api-metrics-token" in api_job  # /metrics needs a token
    assert '"ingest:8081"' in text
    assert re.search(r'names: \["detector", "detector-callees"\]\s+type: A\s+port: 9102', text)
    assert '"alertmanager:9093"' in text


# -- docker-compose.yml ----------------------------------------------------------------------


def _top_level_block(text: str, key: str) -> str:
    match = re.search(rf"^{key}:[^\n]*\n((?:[ #].*\n|\n)*)", text, re.MULTILINE)
    assert match, f"no top-level {key}: in docker-compose.yml"
    return match.group(1)


def _compose_services(text: str) -> dict[str, str]:
    """A minimal reader (PyYAML is not a dependency): service name -> its indented block."""
    block = _top_level_block(text, "services")
    services: dict[str, str] = {}
    for match in re.finditer(r"^  ([A-Za-z0-9_.-]+):\n((?:    .*\n|\s*\n)*)", block, re.MULTILINE):
        services[match.group(1)] = match.group(2)
    return services


def test_compose_defines_every_service_spec_names() -> None:
    text = COMPOSE.read_text()
    assert "\t" not in text, "YAML must be indented with spaces"
    services = _compose_services(text)
    missing = set(INFRASTRUCTURE) | set(CDRWATCH_SERVICES)
    assert missing <= set(services), f"missing services: {sorted(missing - set(services))}"

    assert re.search(r"image: apache/kafka:", services["kafka"])
    assert "KAFKA_PROCESS_ROLES: broker,controller" in services["kafka"]  # KRaft, no ZooKeeper
    assert "KAFKA_ADVERTISED_LISTENERS: PLAINTEXT://kafka:9092" in services["kafka"]
    assert re.search(r"image: postgres:16", services["postgres"])
    assert re.search(r"image: prom/prometheus:", services["prometheus"])
    assert re.search(r"image: prom/alertmanager:", services["alertmanager"])
    assert re.search(r"image: grafana/grafana:", services["grafana"])


def test_compose_runs_the_cdrwatch_services_from_the_project_image() -> None:
    text = COMPOSE.read_text()
    services = _compose_services(text)
    anchor = _top_level_block(text, "x-cdrwatch-service")
    assert "dockerfile: deploy/Dockerfile" in anchor
    env = _top_level_block(text, "x-cdrwatch-env")
    assert "CDRWATCH_KAFKA_BOOTSTRAP: kafka:9092" in env
    assert 'CDRWATCH_KAFKA_IDEMPOTENCE: "true"' in env
    assert "CDRWATCH_HOST: 0.0.0.0" in env
    assert "CDRWATCH_DATABASE_URL: postgresql+asyncpg://" in env
    assert "CDRWATCH_PSEUDONYM_KEY: ${CDRWATCH_PSEUDONYM_KEY:?" in env  # never a default
    for service, command in CDRWATCH_SERVICES.items():
        block = services[service]
        assert "<<: *cdrwatch-service" in block, service
        assert f"command: {command}" in block, service
        assert "<<: *cdrwatch-env" in block, service
    # Both detector stages run and scale out: no fixed name and no host port.
    for stage in ("detector", "detector-callees"):
        assert "replicas:" in services[stage]
        assert not re.search(r"^\s+container_name:", services[stage], re.MULTILINE)
        assert not re.search(r"^\s+ports:", services[stage], re.MULTILINE)
        assert 'CDRWATCH_METRICS_PORT: "9102"' in services[stage]
    assert 'restart: "no"' in services["topics"]
    assert "service_completed_successfully" in anchor


def test_compose_bind_mounts_and_build_files_exist() -> None:
    text = COMPOSE.read_text()
    for source in re.findall(r"^\s+- (\./[^:]+):", text, re.MULTILINE):
        assert (ROOT / source).exists(), f"docker-compose.yml mounts missing {source}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE), "image must not run as root"
    assert "pip install ." in dockerfile
    assert 'ENTRYPOINT ["cdrwatch"]' in dockerfile


def test_compose_parses_as_yaml_when_pyyaml_is_available() -> None:
    """A full parse where PyYAML happens to be installed; the minimal reader otherwise."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        services = _compose_services(COMPOSE.read_text())
        assert all(block.strip() for block in services.values())
        return
    document = yaml.safe_load(COMPOSE.read_text())
    services = document["services"]
    assert services["detector"]["command"] == ["detector", "--stage", "cdrs"]
    assert services["detector-callees"]["command"] == ["detector", "--stage", "callees"]
    assert services["detector"]["environment"]["CDRWATCH_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def test_alertmanager_routes_by_severity_to_defined_receivers() -> None:
    text = ALERTMANAGER.read_text()
    defined = set(re.findall(r"^\s+- name: (\S+)", text, re.MULTILINE))
    used = set(re.findall(r"receiver: (\S+)", text))
    assert used and used <= defined, f"undefined receivers: {used - defined}"
    assert "matchers: ['severity=\"violation\"']" in text
    assert "webhook_configs:" in text


# -- Grafana ---------------------------------------------------------------------------------


def _dashboard() -> dict[str, object]:
    document = json.loads(DASHBOARD.read_text())
    assert isinstance(document, dict)
    return document


def _datasources(node: object) -> Iterator[object]:
    """Every `datasource` value anywhere in the dashboard document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from _datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasources(item)


def test_grafana_dashboard_parses_and_has_the_compliance_panels() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    assert isinstance(panels, list)
    titles = [panel["title"].lower() for panel in panels]
    for wanted in (
        "verdict",
        "headroom",
        "silent",
        "abandoned",
        "out-of-hours",
        "alerts firing",
        "ingest",
        "lag",
    ):
        assert any(wanted in title for title in titles), f"no panel about {wanted}: {titles}"
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    exprs = {
        panel["title"]: " ".join(target["expr"] for target in panel["targets"]) for panel in panels
    }
    # Caps are the campaigns' own, from their profiles (issue 8: `vector(0.03)` for all).
    assert "vector(" not in json.dumps(dashboard)
    for title, expr in exprs.items():
        if "silent" in title.lower() or "abandoned" in title.lower():
            assert "cdrwatch_campaign_cap{" in expr, title
        assert not re.search(r"\b0\.0\d", expr), (title, expr)
    state = " ".join(exprs.values())
    for metric in (
        "cdrwatch_campaign_verdict",
        "cdrwatch_campaign_headroom",
        "cdrwatch_campaign_last_cdr_timestamp_seconds",
    ):
        assert metric in state, f"no panel shows {metric}"


def test_grafana_dashboard_uses_only_its_input_datasource() -> None:
    """Importable anywhere: the data source is an `__inputs` entry referred to as
    `${DS_...}`, never a uid of one installation; a datasource variable of the same name
    resolves it when the file is provisioned (Grafana does not read `__inputs` then)."""
    dashboard = _dashboard()
    inputs = dashboard["__inputs"]
    assert isinstance(inputs, list)
    declared = {item["name"] for item in inputs if item["type"] == "datasource"}
    assert declared and all(name.startswith("DS_") for name in declared)
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}  # type: ignore[index]
    for name in declared:
        assert variables[name]["type"] == "datasource", name
    # Provisioned, the variable takes the default data source: the compose stack's.
    assert re.search(r"^\s+isDefault: true$", DATASOURCES.read_text(), re.MULTILINE)
    used = list(_datasources(dashboard))
    assert used
    for datasource in used:
        assert isinstance(datasource, dict), datasource
        match = re.fullmatch(r"\$\{(DS_[A-Z0-9_]+)\}", datasource.get("uid", ""))
        assert match and match.group(1) in declared, datasource


def test_grafana_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = _promtool()
    dashboard = _dashboard()
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]  # type: ignore[attr-defined]
        for target in panel["targets"]
    ]
    # Grafana's variables replaced by values, then each query checked as a recording rule.
    substituted = [
        expr.replace("$__rate_interval", "1m").replace("$campaign", ".*").replace("$window", ".*")
        for expr in expressions
    ]
    assert all("$" not in expr for expr in substituted), substituted
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for index, expr in enumerate(substituted):
        rules += [f"      - record: dashboard:query_{index}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text("\n".join(rules) + "\n")
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- Alertmanager ----------------------------------------------------------------------------


def _amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail(
            "amtool not found (Debian package prometheus-alertmanager). run: make system-deps",
            pytrace=False,
        )
    return path


def test_alertmanager_config_passes_amtool_check_config() -> None:
    result = _run(_amtool(), "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The shipped configuration in a real Alertmanager (the Debian package's binary)."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail(
            "alertmanager not found (Debian package prometheus-alertmanager). run: make "
            "system-deps",
            pytrace=False,
        )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={ALERTMANAGER}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail((tmp_path / "alertmanager.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _alert(name: str, **labels: str) -> dict[str, object]:
    severity = "violation" if "Violation" in name or name.endswith("AlertFiring") else "warning"
    return {"labels": {"alertname": name, "severity": severity, "stack": "cdrwatch", **labels}}


def test_inhibit_rules_mute_only_what_they_should(alertmanager: str) -> None:
    """Issue 8: `equal: [campaign]` against alerts without a campaign label let any
    violation mute every detector-lag and ingest-reject warning."""
    campaign = {"tenant": "acme", "campaign": "spring"}
    api = {"job": "cdrwatch-api", "instance": "api:8080"}
    alerts = {
        "violation": _alert("CdrwatchSilentRateViolation", **campaign, metric="silent", **api),
        "detector": _alert("CdrwatchComplianceAlertFiring", tenant="acme", rule="r", **api),
        "same-metric": _alert("CdrwatchRateWarning", **campaign, metric="silent", **api),
        "other-metric": _alert("CdrwatchRateWarning", **campaign, metric="abandoned", **api),
        "other-campaign": _alert(
            "CdrwatchRateWarning", tenant="acme", campaign="autumn", metric="silent", **api
        ),
        "lag": _alert("CdrwatchDetectorLagHigh", **api),
        "rejects": _alert(
            "CdrwatchIngestRejectsHigh", reason="invalid", job="cdrwatch-ingest", instance="i:1"
        ),
        "stalled": _alert("CdrwatchCampaignFeedStalled", tenant="acme", campaign="x", **api),
    }
    for key, alert in alerts.items():
        alert["labels"]["case"] = key  # type: ignore[index]
    posted = httpx.post(f"{alertmanager}/api/v2/alerts", json=list(alerts.values()), timeout=5)
    assert posted.status_code == 200, posted.text
    deadline = time.monotonic() + 10
    while True:
        got = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        if len(got) == len(alerts) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    muted = {a["labels"]["case"] for a in got if a["status"]["inhibitedBy"]}
    assert {a["labels"]["case"] for a in got} == set(alerts)
    # The warning on the violating campaign's metric is muted, and a stalled feed while the
    # detector lags; nothing else (lag and rejects stay loud under any violation).
    assert muted == {"same-metric", "stalled"}
