"""The production-shaped files that cannot run here (no Docker engine) stay well-formed.

docker-compose.yml, the Prometheus scrape config and the Grafana provisioning and dashboard
are only ever exercised by users with Docker, so these tests check what would break there:
unpinned images, missing mounted files, wiring between services, and dashboard queries on
metric names the code does not expose. The `cluster` profile's ClickHouse cluster is checked
the same way: its XML configs parse and agree with each other and with the services.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry

import metering.metrics
from metering.settings import Settings
from schemas.catalog import load_catalog
from schemas.plans import MauPlan

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "metering.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "metering.yml"
CLUSTER_DIR = ROOT / "deploy" / "clickhouse-cluster"

SERVICES = {"kafka", "clickhouse", "worker", "api", "prometheus", "grafana"}
PUBLISHED = {"kafka": {9092}, "clickhouse": {8123, 9000}, "api": {8080},
             "prometheus": {9090}, "grafana": {3000}}
METERING_SERVICES = ("worker", "api")
# Profile `cluster`: the metering services on the cluster, each standing in for one above
CLUSTER_PROFILE = "cluster"
CLUSTER_METERING = {"worker-cluster": "worker", "api-cluster": "api"}
SERVER_CONFIG_DIR = "/etc/clickhouse-server/config.d/"
KEEPER_CONFIG = "/etc/clickhouse-keeper/keeper_config.xml"
KEEPER_IMAGE = "clickhouse/clickhouse-keeper"
SERVER_TCP_PORT = 9000
# `${NAME:?message}`: compose refuses to start when NAME is unset, and no value is committed
REQUIRED_VARIABLE = re.compile(r"^\$\{(?P<name>[A-Z_][A-Z0-9_]*):?\?[^}]*\}$")
SECRET_KEY = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEY", re.IGNORECASE)
METRIC_NAME = re.compile(r"\bmetering_[a-zA-Z0-9_]*[a-zA-Z0-9]\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
GROUPING = re.compile(r"\b(?:by|without)\s*\((?P<labels>[^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*(?P<label>\w+)\s*\}\}")
# `pip install .[a,b]`: the checkout copied into the image, with extras
LOCAL_INSTALL = re.compile(r"^\.(?:\[(?P<extras>[^\]]*)\])?$")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _yaml(COMPOSE)
    return compose


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _env(service: str) -> dict[str, str]:
    env = _services()[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: write environment as a mapping"
    return {str(key): str(value) for key, value in env.items()}


def _default(value: str) -> str:
    """The value compose uses for `${NAME:-default}` when NAME is unset; others unchanged."""
    match = re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*:?-(?P<default>[^}]*)\}", value)
    return match["default"] if match else value


def _image_tag(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else ""


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount; named volumes are skipped."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def _published_ports(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port."""
    ports = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports[int(port["published"])] = int(port["target"])
            continue
        *_, host, container = str(port).split(":")
        ports[int(host)] = int(container.split("/")[0])
    return ports


def _container_path(service: str, host_path: Path) -> str:
    for source, target in _bind_mounts(_services()[service]):
        if (ROOT / source).resolve() == host_path.resolve():
            return target
    raise AssertionError(f"{service} does not mount {host_path.relative_to(ROOT)}")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _extras_closure(extras: set[str]) -> set[str]:
    """`extras` and every extra they pull in through `usage-metering[...]` requirements."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    self_requirement = re.compile(rf"^{re.escape(project['name'])}\[(?P<extras>[^\]]+)\]")
    optional: dict[str, list[str]] = project["optional-dependencies"]
    unknown = extras - set(optional)
    assert not unknown, f"the Dockerfile names extras pyproject.toml lacks: {sorted(unknown)}"
    found, pending = set(), list(extras)
    while pending:
        extra = pending.pop()
        if extra in found:
            continue
        found.add(extra)
        for requirement in optional[extra]:
            match = self_requirement.match(requirement)
            if match:
                pending.extend(name.strip() for name in match["extras"].split(","))
    return found


def _image_extras() -> set[str]:
    """The extras the image's `pip install` of the copied checkout asks for."""
    installs: list[re.Match[str]] = []
    for keyword, arguments in _dockerfile_instructions():
        words = shlex.split(arguments) if keyword == "RUN" else []
        if words[:2] == ["pip", "install"]:
            installs.extend(m for word in words[2:] if (m := LOCAL_INSTALL.match(word)))
    assert len(installs) == 1, "the Dockerfile should pip install the checkout exactly once"
    extras = installs[0]["extras"] or ""
    return _extras_closure({name.strip() for name in extras.split(",") if name.strip()})


def test_dockerfile_copies_paths_that_exist() -> None:
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"


def test_image_installs_the_worker_and_the_api() -> None:
    # A bare install is the producer library only: `metering worker` would not start
    extras = _image_extras()
    assert "worker" in extras, f"the image installs extras {sorted(extras)}, none with the worker"
    # The same image runs `metering serve` for the api service
    assert "serve" in _services()["api"]["command"]
    assert "api" in extras, f"the image installs extras {sorted(extras)}, none with the API"


def test_compose_names_every_service_of_the_stack() -> None:
    assert set(_services()) >= SERVICES


def test_compose_images_are_pinned() -> None:
    for name, service in _services().items():
        image = service.get("image", "")
        tag = _image_tag(image)
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        if "build" in service:
            assert (ROOT / service["build"]["context"]).is_dir()
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_worker_and_api_share_one_built_image() -> None:
    images = {_services()[name]["image"] for name in METERING_SERVICES}
    assert len(images) == 1, images


def test_compose_bind_mounts_exist_in_the_repository() -> None:
    for name, service in _services().items():
        for source, _ in _bind_mounts(service):
            assert (ROOT / source).exists(), f"{name}: mounts missing {source}"


def test_compose_publishes_the_documented_ports() -> None:
    for name, ports in PUBLISHED.items():
        assert set(_published_ports(_services()[name])) >= ports, name


def test_compose_long_running_services_have_healthchecks() -> None:
    for name in SERVICES:
        assert "test" in _services()[name].get("healthcheck", {}), f"{name}: no healthcheck"


def test_worker_and_api_reach_kafka_and_clickhouse_services() -> None:
    kafka_env = _env("kafka")
    assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    for name in METERING_SERVICES:
        env = _env(name)
        assert env["METERING_BROKER_URL"] == "kafka://kafka:9092", name
        assert env["METERING_STORE_URL"].startswith("clickhouse://clickhouse:9000/"), name
        database = env["METERING_STORE_URL"].rsplit("/", 1)[1]
        assert database == _env("clickhouse")["CLICKHOUSE_DB"], name
        catalog = env["METERING_CATALOG"]
        mounted = {target: source for source, target in _bind_mounts(_services()[name])}
        assert (ROOT / mounted[catalog]).is_file(), f"{name}: catalog {catalog} is not mounted"
        depends = _services()[name]["depends_on"]
        assert {"kafka", "clickhouse"} <= set(depends), name


def test_metering_settings_come_from_known_variables() -> None:
    known = {f"METERING_{field.upper()}" for field in Settings.model_fields}
    for name in METERING_SERVICES:
        unknown = {key for key in _env(name) if key.startswith("METERING_")} - known
        assert not unknown, f"{name}: no setting reads {sorted(unknown)}"


def test_partitions_match_between_kafka_and_workers() -> None:
    partitions = _default(_env("worker")["METERING_PARTITIONS"])
    assert int(partitions) >= _services()["worker"]["deploy"]["replicas"]
    assert _default(_env("kafka")["KAFKA_NUM_PARTITIONS"]) == partitions


def test_worker_exposes_metrics_on_all_interfaces() -> None:
    env = _env("worker")
    assert env["METERING_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - inside its container
    assert int(env["METERING_METRICS_PORT"]) > 0


def test_api_serves_and_runs_the_close() -> None:
    api = _services()["api"]
    env = _env("api")
    assert api["command"] == ["serve"]
    assert env["METERING_API_HOST"] == "0.0.0.0"  # noqa: S104 - inside its container
    assert _published_ports(api)[int(env["METERING_API_PORT"])] == int(env["METERING_API_PORT"])
    assert float(env["METERING_CLOSE_INTERVAL_SECONDS"]) == 300
    assert int(env["METERING_TOP_TEAMS_METRIC"]) > 0


def test_api_tokens_come_from_the_environment() -> None:
    tokens = _env("api")["METERING_API_TOKENS"]
    match = REQUIRED_VARIABLE.match(tokens)
    assert match and match["name"] == "METERING_API_TOKENS", f"literal token {tokens!r}"


def test_no_secret_is_committed_in_compose() -> None:
    for name in _services():
        for key, value in _env(name).items():
            if SECRET_KEY.search(key):
                assert REQUIRED_VARIABLE.match(value), f"{name}: {key} has a literal value"
    if (ROOT / ".env").exists():
        gitignore = ROOT / ".gitignore"
        ignored = gitignore.read_text().splitlines() if gitignore.exists() else []
        assert {".env", "/.env"} & {line.strip() for line in ignored}, ".env is not git-ignored"


def test_prometheus_scrapes_every_worker_replica_and_the_api() -> None:
    config = _yaml(PROMETHEUS)
    assert _container_path("prometheus", PROMETHEUS) == "/etc/prometheus/prometheus.yml"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    workers = [job for job in jobs.values() if "dns_sd_configs" in job]
    assert len(workers) == 1, "one dns_sd job finds every scaled worker replica"
    (discovery,) = workers[0]["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert discovery["type"] == "A"
    assert discovery["port"] == int(_env("worker")["METERING_METRICS_PORT"])
    assert workers[0].get("metrics_path", "/metrics") == "/metrics"
    api_target = f"api:{_env('api')['METERING_API_PORT']}"
    api_jobs = [
        job for job in jobs.values()
        for static in job.get("static_configs", [])
        if api_target in static["targets"]
    ]
    assert len(api_jobs) == 1, f"no job scrapes {api_target}"
    assert api_jobs[0].get("metrics_path", "/metrics") == "/metrics"
    # The API's /metrics needs no token: a scrape config with credentials would hide that
    assert "authorization" not in api_jobs[0] and "bearer_token" not in api_jobs[0]


def _datasource_uid() -> str:
    (datasource,) = _yaml(DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus"
    prometheus_port = next(iter(_published_ports(_services()["prometheus"]).values()))
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    uid: str = datasource["uid"]
    return uid


def test_grafana_provisions_the_datasource_and_dashboards() -> None:
    assert _container_path("grafana", GRAFANA / "provisioning") == "/etc/grafana/provisioning"
    assert _datasource_uid()
    (provider,) = _yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == _container_path("grafana", DASHBOARD.parent)


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _query_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in _dashboard()["panels"]:
        panels.extend([panel, *panel.get("panels", [])])
    return [panel for panel in panels if panel.get("targets")]


def test_dashboard_is_pinned_and_uses_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    uid = _datasource_uid()
    panels = _query_panels()
    assert len(panels) >= 8
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]


def _exposed_names(registry: CollectorRegistry) -> set[str]:
    """Series names a scrape shows: `_total` back on counters (prometheus_client strips it
    from family names), `_bucket`/`_sum`/`_count` on histograms. Built from the families
    because a labelled family with no children yet has no samples."""
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in HISTOGRAM_SUFFIXES)
        elif family.type == "summary":
            names.update({family.name, f"{family.name}_sum", f"{family.name}_count"})
        elif family.type == "info":
            names.add(f"{family.name}_info")
        else:
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


@cache
def _declared_metrics() -> dict[str, frozenset[str]]:
    """Series name -> label names, for every metric the classes of metering.metrics declare."""
    creates = []
    for _, cls in inspect.getmembers(metering.metrics, inspect.isclass):
        create = getattr(cls, "create", None)
        if cls.__module__ == metering.metrics.__name__ and callable(create):
            creates.append(create)
    assert creates, "metering.metrics declares no metric classes"
    declared: dict[str, frozenset[str]] = {}
    for create in creates:
        # One registry per class: the worker and the API serve separate registries, and a
        # metric both declare would otherwise collide here but not in production
        registry = CollectorRegistry()
        create(registry)
        # A family without children yet shows its label names in no sample, and
        # prometheus_client offers no public accessor for them
        collectors = registry._names_to_collectors
        for name in _exposed_names(registry):
            labels = frozenset(getattr(collectors[name], "_labelnames", ()))
            declared[name] = labels | {"le"} if name.endswith("_bucket") else labels
    return declared


def _dashboard_metric_names() -> dict[str, str]:
    """metric name -> title of a panel that queries it."""
    used: dict[str, str] = {}
    for panel in _query_panels():
        for target in panel["targets"]:
            for name in METRIC_NAME.findall(target["expr"]):
                used.setdefault(name, panel["title"])
    return used


def test_dashboard_covers_the_operational_metrics() -> None:
    used = set(_dashboard_metric_names())
    assert used >= {
        "metering_events_received_total", "metering_event_rows_written_total",
        "metering_events_duplicate_total", "metering_events_late_total",
        "metering_events_rejected_total", "metering_consumer_lag", "metering_store_up",
        "metering_store_write_retries_total", "metering_team_mau",
        "metering_close_runs_total", "metering_close_duration_seconds_bucket",
        "metering_invoices_issued_total", "metering_last_successful_close_timestamp_seconds",
    }


@pytest.mark.parametrize("name", sorted(_dashboard_metric_names()))
def test_dashboard_metric_is_declared_by_the_code(name: str) -> None:
    assert name in _declared_metrics(), (
        f"{name} (panel {_dashboard_metric_names()[name]!r}) is not declared in metering.metrics"
    )


def test_dashboard_groups_and_legends_use_declared_labels() -> None:
    declared = _declared_metrics()
    for panel in _query_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            labels: set[str] = set()
            for name in METRIC_NAME.findall(expr):
                labels |= declared.get(name, frozenset())
            used = {
                label.strip()
                for group in GROUPING.findall(expr) for label in group.split(",")
                if label.strip()
            }
            used |= set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
            assert used <= labels, f"{panel['title']}: no metric has labels {used - labels}"


def test_example_catalog_loads() -> None:
    catalog = load_catalog(ROOT / "deploy" / "examples" / "catalog.yaml")
    power = catalog.plans["power"]
    assert isinstance(power, MauPlan)
    assert power.included_users == 5


# --- Profile `cluster`: 2 shards x 2 replicas of clickhouse-server and ClickHouse Keeper ---


def _profiles(name: str) -> list[str]:
    profiles: list[str] = _services()[name].get("profiles", [])
    return profiles


def _cluster_services() -> list[str]:
    return [name for name in _services() if CLUSTER_PROFILE in _profiles(name)]


def _nodes() -> list[str]:
    """The cluster's clickhouse-server services."""
    image = _services()["clickhouse"]["image"]
    return [name for name in _cluster_services() if _services()[name]["image"] == image]


def _keepers() -> list[str]:
    return [name for name in _cluster_services()
            if _services()[name]["image"].startswith(f"{KEEPER_IMAGE}:")]


def _version(image: str) -> str:
    """`24.8.14.39` of `repo:24.8.14.39-alpine`: the release, without the variant."""
    return _image_tag(image).split("-", 1)[0]


@cache
def _xml(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # noqa: S314 - the repository's own files


def _text(root: ET.Element, path: str) -> str:
    element = root.find(path)
    assert element is not None and element.text and element.text.strip(), f"no <{path}>"
    return element.text.strip()


def _node_config(node: str) -> ET.Element:
    """The node's config.d files merged at the top level; a section in two files fails, as
    the servers' merge of repeated sections is not what a reader of one file expects."""
    merged = ET.Element("clickhouse")
    sections: dict[str, str] = {}
    for source, target in _bind_mounts(_services()[node]):
        if not target.startswith(SERVER_CONFIG_DIR):
            continue
        assert target.endswith(".xml"), f"{node}: {target} is not read as config"
        root = _xml(ROOT / source)
        assert root.tag == "clickhouse", f"{source}: root <{root.tag}>"
        for section in root:
            assert section.tag not in sections, (
                f"{node}: <{section.tag}> in {sections[section.tag]} and {source}")
            sections[section.tag] = source
            merged.append(section)
    return merged


def _remote_shards(node: str) -> list[list[tuple[str, int]]]:
    """(host, port) of each replica of each shard of the cluster named in the store URLs."""
    cluster = _node_config(node).find(f"remote_servers/{_store_cluster()}")
    assert cluster is not None, f"{node}: no cluster {_store_cluster()!r} in remote_servers"
    shards = []
    for shard in cluster.findall("shard"):
        assert _text(shard, "internal_replication") == "true", f"{node}: a shard replicates itself"
        shards.append([(_text(replica, "host"), int(_text(replica, "port")))
                       for replica in shard.findall("replica")])
    return shards


def _store_urls() -> dict[str, SplitResult]:
    return {name: urlsplit(_env(name)["METERING_STORE_URL"]) for name in CLUSTER_METERING}


def _store_cluster() -> str:
    clusters: set[str] = set()
    for name, url in _store_urls().items():
        query = parse_qs(url.query, strict_parsing=True)
        assert list(query) == ["cluster"] and len(query["cluster"]) == 1, f"{name}: {url.query}"
        clusters.add(query["cluster"][0])
    assert len(clusters) == 1, f"the cluster metering services name clusters {clusters}"
    return clusters.pop()


def _keeper_config() -> ET.Element:
    sources = {source for name in _keepers()
               for source, target in _bind_mounts(_services()[name]) if target == KEEPER_CONFIG}
    assert len(sources) == 1, f"the keepers mount {sources} as {KEEPER_CONFIG}: one file for all"
    return _xml(ROOT / sources.pop())


def _keeper_server_id(name: str) -> int:
    """The keeper's server_id, resolving from_env against the service's environment."""
    element = _keeper_config().find("keeper_server/server_id")
    assert element is not None, "keeper config: no <keeper_server><server_id>"
    variable = element.get("from_env")
    value = _env(name)[variable] if variable else element.text
    return int(str(value))


def _data_volume(name: str, target: str) -> str:
    volumes = [volume.split(":")[0] for volume in _services()[name].get("volumes", [])
               if isinstance(volume, str) and volume.split(":")[1] == target]
    assert len(volumes) == 1 and volumes[0] in _compose()["volumes"], f"{name}: {target}"
    return volumes[0]


def test_default_services_have_no_profile() -> None:
    # `docker compose up` starts exactly the single-node stack
    for name in SERVICES:
        assert not _profiles(name), f"{name} is in profiles {_profiles(name)}"


def test_cluster_services_are_in_the_cluster_profile_only() -> None:
    for name in set(_services()) - SERVICES:
        assert _profiles(name) == [CLUSTER_PROFILE], f"{name}: profiles {_profiles(name)}"
    assert len(_nodes()) == 4
    assert len(_keepers()) == 3
    assert set(_cluster_services()) == {*_nodes(), *_keepers(), *CLUSTER_METERING}


def test_cluster_runs_the_single_node_clickhouse_release() -> None:
    single = _services()["clickhouse"]["image"]
    for name in _nodes():
        assert _services()[name]["image"] == single, name
    for name in _keepers():
        image = _services()[name]["image"]
        assert _version(image) == _version(single), f"{name}: {image} against {single}"


def test_cluster_services_have_healthchecks() -> None:
    # Long-running, and waited on: keepers by the nodes, nodes by the metering services
    for name in _cluster_services():
        assert "test" in _services()[name].get("healthcheck", {}), f"{name}: no healthcheck"


def test_every_node_lists_the_same_two_shards_of_two_replicas() -> None:
    nodes = _nodes()
    for node in nodes:
        shards = _remote_shards(node)
        assert shards == _remote_shards(nodes[0]), f"{node} and {nodes[0]} list other replicas"
        assert [len(replicas) for replicas in shards] == [2, 2], f"{node}: {shards}"
        hosts = [host for replicas in shards for host, _ in replicas]
        assert sorted(hosts) == sorted(nodes), f"{node}: remote_servers lists {hosts}"
        assert {port for replicas in shards for _, port in replicas} == {SERVER_TCP_PORT}


def test_node_macros_match_the_shard_listing_the_node() -> None:
    shard_of = {host: index for index, replicas in enumerate(_remote_shards(_nodes()[0]))
                for host, _ in replicas}
    macros = {node: (_text(_node_config(node), "macros/shard"),
                     _text(_node_config(node), "macros/replica")) for node in _nodes()}
    # One shard macro per listed shard, so each shard has its own Keeper path
    shard_macros: dict[int, set[str]] = {shard_of[node]: set() for node in macros}
    for node, (shard, _) in macros.items():
        shard_macros[shard_of[node]].add(shard)
    assert all(len(values) == 1 for values in shard_macros.values()), shard_macros
    assert len({values.pop() for values in shard_macros.values()}) == len(shard_macros)
    replicas = Counter(replica for _, replica in macros.values())
    assert all(count == 1 for count in replicas.values()), f"replica macros repeat: {replicas}"


def test_nodes_announce_their_own_interserver_host() -> None:
    for node in _nodes():
        assert _text(_node_config(node), "interserver_http_host") == node


def test_nodes_use_the_keeper_services() -> None:
    client_port = int(_text(_keeper_config(), "keeper_server/tcp_port"))
    for node in _nodes():
        config = _node_config(node)
        zookeeper = [(_text(entry, "host"), int(_text(entry, "port")))
                     for entry in config.findall("zookeeper/node")]
        assert sorted(zookeeper) == sorted((name, client_port) for name in _keepers()), node
        assert _text(config, "distributed_ddl/path").startswith("/"), node
        depends = _services()[node]["depends_on"]
        for keeper in _keepers():
            assert depends[keeper]["condition"] == "service_healthy", f"{node} on {keeper}"


def test_keepers_form_one_raft_group() -> None:
    config = _keeper_config()
    raft = {int(_text(server, "id")): _text(server, "hostname")
            for server in config.findall("keeper_server/raft_configuration/server")}
    ids = {name: _keeper_server_id(name) for name in _keepers()}
    assert sorted(ids.values()) == sorted(raft), f"server ids {ids} against raft {raft}"
    for name, server_id in ids.items():
        assert raft[server_id] == name, f"{name} has the id of {raft[server_id]}"
    # The healthcheck asks the readiness endpoint the config serves
    port = _text(config, "keeper_server/http_control/port")
    endpoint = config.findtext("keeper_server/http_control/readiness/endpoint", "/ready")
    for name in _keepers():
        test = " ".join(_services()[name]["healthcheck"]["test"])
        assert f":{port}{endpoint}" in test, f"{name}: healthcheck {test!r}"


def test_every_cluster_member_keeps_its_own_data_volume() -> None:
    volumes = [_data_volume(name, "/var/lib/clickhouse") for name in [*_nodes(), *_keepers()]]
    assert len(set(volumes)) == len(volumes), f"shared data volumes: {volumes}"
    assert _data_volume("clickhouse", "/var/lib/clickhouse") not in volumes


def test_cluster_configs_are_all_mounted() -> None:
    mounted = {(ROOT / source).resolve() for name in _cluster_services()
               for source, _ in _bind_mounts(_services()[name])}
    for path in CLUSTER_DIR.rglob("*.xml"):
        assert path.resolve() in mounted, f"{path.relative_to(ROOT)} is mounted by no service"


def test_cluster_metering_services_open_the_cluster() -> None:
    nodes = _nodes()
    for name, url in _store_urls().items():
        assert url.scheme == "clickhouse", name
        assert url.hostname in nodes and (url.port or SERVER_TCP_PORT) == SERVER_TCP_PORT, name
        database = url.path.removeprefix("/")
        for node in nodes:
            assert database == _env(node)["CLICKHOUSE_DB"], f"{name}: database on {node}"
            assert _node_config(node).find(f"remote_servers/{_store_cluster()}") is not None
        depends = _services()[name]["depends_on"]
        for service in ("kafka", *nodes):
            assert depends[service]["condition"] == "service_healthy", f"{name} on {service}"
        assert "clickhouse" not in depends, f"{name} waits on the single node"


def test_cluster_metering_services_mirror_the_single_node_ones() -> None:
    # The same processes, only on the cluster, and found by Prometheus under the same name
    for name, single in CLUSTER_METERING.items():
        service, original = _services()[name], _services()[single]
        for key in ("image", "command", "volumes", "healthcheck", "deploy", "ports"):
            assert service.get(key) == original.get(key), f"{name}: {key} differs from {single}"
        env, single_env = _env(name), _env(single)
        assert {key: value for key, value in env.items() if key != "METERING_STORE_URL"} == {
            key: value for key, value in single_env.items() if key != "METERING_STORE_URL"
        }, name
        assert service["networks"]["default"]["aliases"] == [single], name
